"""CUDA graphs: :func:`capture_graph` records a function once and replays it;
:class:`GraphedForward` replays a model's inference forward per input shape. Both are
optimisations: off CUDA (and on capture failure) the same code runs eagerly."""

from __future__ import annotations

import contextlib

import torch


class GraphedForward:
    """Inference forward passes replayed from CUDA graphs, one per input shape.

    ``fwd(x)`` returns ``model(x)`` (eval mode, no grad, under ``autocast``). On CUDA each
    new (shape, dtype, memory format) is captured once into a graph with a static input
    buffer, and later calls copy ``x`` in and replay it, so the launch overhead of every
    layer's kernels goes away; the output is the graph's static buffer, valid until the
    next call with that shape (``.clone()`` it to keep it). A graph is keyed on the
    addresses of the model's parameters and buffers, so moving or replacing them (a
    ``.to()``, a swapped-in EMA model) captures anew instead of reading stale memory.
    Anywhere else (or with ``enabled=False``) the model runs eagerly, under the same
    ``inference_mode`` and autocast."""

    def __init__(
        self, model: torch.nn.Module, autocast=None, max_graphs: int = 4, enabled: bool = True
    ):
        self.model = model
        self.autocast = autocast
        self.max_graphs = max_graphs
        self.enabled = enabled  # False: always the eager forward (graphs turned off)
        self.graphs: dict = {}

    def _graphs_for(self, x: torch.Tensor) -> bool:
        return (
            self.enabled
            and x.device.type == "cuda"
            and not torch.cuda.is_current_stream_capturing()
        )

    def _key(self, x: torch.Tensor) -> tuple:
        ptrs = tuple(t.data_ptr() for t in self.model.parameters())
        ptrs += tuple(t.data_ptr() for t in self.model.buffers())
        return (ptrs, self.model.training, tuple(x.shape), x.dtype, x.stride(), x.device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), (self.autocast or contextlib.nullcontext)():
            return self.model(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self._graphs_for(x):
            return self._run(x)
        key = self._key(x)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:  # e.g. a loader's ragged last batches
                return self._run(x)
            entry = self.graphs[key] = self._capture(x)
        static_x, out, g = entry
        if x.data_ptr() != static_x.data_ptr():  # not already written into the buffer
            static_x.copy_(x)
        g.replay()
        return out

    def buffer(self, x: torch.Tensor) -> torch.Tensor:
        """The static input buffer of ``x``'s graph, holding a copy of ``x`` (capturing the
        graph first if needed). Write the next inputs into it and call ``fwd(buffer)``:
        the replay then reads them where they are, without a copy. Off CUDA: ``x``."""
        if not self._graphs_for(x):
            return x
        key = self._key(x)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        static_x = self.graphs[key][0]
        static_x.copy_(x)
        return static_x

    def _capture(self, x: torch.Tensor):
        static_x = x.clone()  # keeps x's memory format
        # warm-up: kernel selection, autocast's weight casts
        g, out = capture_graph(lambda: self._run(static_x), x.device, warmup=2)
        return static_x, out, g


def capture_graph(fn, device: torch.device, warmup: int = 3):
    """Call ``fn`` ``warmup`` times on a side stream, then record one call in a CUDA graph;
    returns (graph, what the recorded call returned: static buffers the replays refill).
    ``fn`` must read static inputs only."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out
