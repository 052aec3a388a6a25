"""The whole training step in one CUDA graph.

On a GPU, LeNet-5's step is a few hundred microseconds of tiny kernels; launched one by
one from Python, the host is the bottleneck (the issue's measured eager resident loop:
0.62 s per Fashion-MNIST epoch on an H100, against 0.06 s for a hand-written graph). So
everything a step does is written as a function of device tensors only:

* the batch: row ``counter`` of the epoch's permutation (a device tensor; the
  permutation is drawn once per epoch, eagerly, into a fixed buffer);
* the augmentation: the loader's batched on-device ops, drawing from the trainer's
  generator (registered with the graph, so every replay draws fresh numbers);
* forward, loss, backward, gradient clipping, the fused optimiser step — the learning
  rate is a device tensor the host-side schedule ``fill_``s between replays;
* the epoch's running sums (loss, correct, per-step losses) and ``counter += 1``.

On CUDA :meth:`capture` records this once and :meth:`__call__` replays it; anywhere else
(and in the tests) the same function runs eagerly, step for step the same computation as
the trainer's ordinary loop.

Capture needs warm-up steps, which would move the weights; they run on a snapshot that
is restored afterwards (weights, buffers, optimiser state back to zero, generator state),
so the run is the same run as without the graph. Its cost is reported as one-time
``capture_seconds``, not as training time.
"""

from __future__ import annotations

import time

import torch

# Optimisers whose fused CUDA kernels take a device-tensor learning rate and can be captured.
GRAPHABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def unsupported_reason(task) -> str | None:
    """Why the whole-step graph cannot run for this classification task (None: it can)."""
    cfg = task.cfg
    ld = task.train_loader
    if not (hasattr(ld, "x") and hasattr(ld, "prepare")) or getattr(ld, "world", 1) != 1:
        return "the training set is not device-resident in one process"
    if cfg.train.nan_policy == "skip":
        return "train.nan_policy=skip decides on the host every step"
    if task.rt.amp_dtype is torch.float16:
        return "fp16 loss scaling decides on the host every step"
    if getattr(cfg.train, "adversarial", "none") not in ("none", "", None):
        return "adversarial training computes input gradients per step"
    if task.dist.enabled:
        return "distributed training"
    if type(task.optimizer) not in GRAPHABLE_OPTIMIZERS:
        return f"optimizer {type(task.optimizer).__name__} has no capturable fused kernel"
    return None


class WholeStep:
    """One training step over device state only; eager, or replayed from a CUDA graph."""

    def __init__(self, task):
        self.model = task.model
        self.opt = task.optimizer
        self.loss_fn = task.loss_fn
        self.rt = task.rt
        self.loader = ld = task.train_loader
        self.generator = task.generator
        self.step_optimizer = task.ctx.step_optimizer
        dev = self.rt.device
        self.bs, self.steps = ld.batch_size, len(ld)
        self.perm = torch.zeros(self.steps, self.bs, dtype=torch.long, device=dev)
        self.counter = torch.zeros(1, dtype=torch.long, device=dev)
        self.params = [p for g in self.opt.param_groups for p in g["params"]]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_seconds = 0.0
        self.loss = self.corr = None

    def _tensor_lr(self) -> None:
        """Learning rates as device tensors on CUDA: a replayed step reads the current
        value. (Elsewhere the step runs eagerly and plain floats do.)"""
        dev = self.rt.device
        if dev.type != "cuda":
            return
        for g in self.opt.param_groups:
            if not isinstance(g["lr"], torch.Tensor):
                g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=dev)
            if isinstance(self.opt, (torch.optim.Adam, torch.optim.AdamW)):
                g["capturable"] = True

    # -- the step ---------------------------------------------------------------------------

    def body(self) -> None:
        ld = self.loader
        j = self.perm.index_select(0, self.counter).view(-1)
        x = ld.prepare(ld.x.index_select(0, j), train=True)
        y = ld.y.index_select(0, j)
        with self.rt.autocast():
            out = self.model(x)
            loss = self.loss_fn(out, y)
        self.step_optimizer(loss, self.opt, self.params, foreach=True)
        # the step's outputs: static tensors a replay overwrites (the trainer adds them to
        # the epoch's sums before the next step)
        self.loss = loss.detach().float()
        self.corr = (out.detach().argmax(1) == y).sum()
        self.counter.add_(1)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.body()
        return self.loss, self.corr

    # -- epochs -----------------------------------------------------------------------------

    def start_epoch(self, order: torch.Tensor, step: int) -> None:
        """Load an epoch's permutation and (after a mid-epoch resume) its position."""
        n = self.steps * self.bs
        self.perm.view(-1).copy_(order[:n])
        self.counter.fill_(step)

    # -- capture ----------------------------------------------------------------------------

    def capture(self, warmup: int = 3) -> None:
        """Record the step in a CUDA graph, leaving model, optimiser and RNG as they were."""
        t0 = time.perf_counter()
        self._tensor_lr()  # here, after any resume has loaded the optimiser's groups
        model, opt, gen = self.model, self.opt, self.generator
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_opt = {
            id(p): {k: v.detach().clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
            for p, s in opt.state.items()
        }
        gen_state = gen.get_state() if gen is not None else None
        self.perm.copy_(
            torch.arange(self.perm.numel(), device=self.perm.device).view_as(self.perm)
            % self.loader.x.shape[0]
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())

        def restore() -> None:
            torch.cuda.synchronize()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(saved[k])
                for p, st in opt.state.items():
                    old = saved_opt.get(id(p), {})
                    for k, v in st.items():
                        if isinstance(v, torch.Tensor):
                            # state the warm-up created: Adam's moments/step and SGD's
                            # momentum start at zero (the same first update as a buffer made
                            # from the first gradient)
                            if k in old:
                                v.copy_(old[k])
                            else:
                                v.zero_()
            if gen is not None:
                gen.set_state(gen_state)
            self.counter.zero_()

        try:
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.counter.zero_()
                    self.body()
            torch.cuda.current_stream().wait_stream(side)
            restore()
            g = torch.cuda.CUDAGraph()
            if gen is not None:
                g.register_generator_state(gen)
            with torch.cuda.graph(g):
                self.body()
        except Exception:
            restore()  # the run goes on eagerly from exactly where it was
            raise
        self.graph = g
        self.counter.zero_()
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - t0
