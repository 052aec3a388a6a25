"""The server's two queues. Request bodies are parsed and decoded in a bounded pool of
decode threads (:class:`DecodePool`), never on the event loop; every model call runs on
one model thread fed by :class:`MicroBatcher`, which batches only requests that are
already waiting (an idle server answers at once). One model thread keeps torch/ORT
threads from fighting over the cores."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cnnlab.deploy.bodies import InputError


class MicroBatcher:
    """Gather concurrent requests into one forward pass (``max_batch`` images at most,
    the first request waits at most ``max_wait_ms``); run it on one worker thread."""

    def __init__(self, fn, max_batch: int, max_wait_ms: float, on_batch=None):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-model")
        self._loop = None
        self._queue: asyncio.Queue | None = None
        self._task = None

    def _ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())

    async def submit(self, x: np.ndarray) -> np.ndarray:
        self._ensure()
        fut = self._loop.create_future()
        await self._queue.put((x, fut))
        return await fut

    async def run_alone(self, fn, *args):
        """Run another model call (saliency) on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run(self) -> None:
        q, loop = self._queue, self._loop
        carry = None
        while True:
            first = carry if carry is not None else await q.get()
            carry = None
            if first[1].done():  # its client is gone (the request was cancelled)
                continue
            items, n = [first], len(first[0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                if q.empty():
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(q.get(), left)
                    except asyncio.TimeoutError:  # not the builtin before 3.11
                        break
                else:
                    nxt = q.get_nowait()
                if nxt[1].done():
                    continue
                if n + len(nxt[0]) > self.max_batch:
                    carry = nxt  # starts the next batch
                    break
                items.append(nxt)
                n += len(nxt[0])
            x = items[0][0] if len(items) == 1 else np.concatenate([it[0] for it in items])
            try:
                logits = await loop.run_in_executor(self.executor, self.fn, x)
            except Exception as e:  # a model failure answers these requests, not the server
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            if self.on_batch:
                self.on_batch(len(x))
            i = 0
            for xi, fut in items:
                if not fut.done():
                    fut.set_result(logits[i : i + len(xi)])
                i += len(xi)


class DecodePool:
    """Work on request bodies in ``workers`` threads, at most ``max_pending`` requests
    waiting for or in them (beyond: 503 + Retry-After, counted in ``metrics["pending"]``)."""

    def __init__(self, workers: int, max_pending: int, metrics: dict):
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="cnnlab-decode")
        self.max_pending, self.m = max_pending, metrics
        self.pending = 0  # requests waiting for or in the pool

    async def run(self, fn, body: bytes, *args, receive=None):
        """``fn(body, *args)`` in the pool (one hop off the loop). With ``receive``, a client
        that hangs up while its request waits is dropped from the queue: its exception
        (ClientGone) is raised here, and the work is never started or its result dropped."""
        if self.pending >= self.max_pending:
            raise InputError(
                f"server busy: {self.pending} requests waiting to be decoded (--max-pending); "
                "retry in 1 s",
                503,
                retry_after=1,
            )
        self.pending += 1
        self.m["pending"].set(self.pending)
        try:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self.executor, fn, body, *args)
            del body  # the pool holds it; a dropped request frees it
            if receive is None:
                return await work
            gone = asyncio.ensure_future(receive())  # returns only if the client hangs up
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                gone.cancel()
                return work.result()
            if gone.exception() is None:  # not a hang-up after all
                return await work
            work.cancel()  # not started: never decoded; started: its result is dropped
            self.m["abandoned"].inc()
            raise gone.exception()  # ClientGone
        finally:
            self.pending -= 1
            self.m["pending"].set(self.pending)
