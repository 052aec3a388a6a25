"""Optimisers and learning-rate schedules by name.

Schedules are pure functions of the global step (plus a little state for 'plateau'),
so a resumed run lands on exactly the same learning rate.
"""

from __future__ import annotations

import math

import torch

from cnnlab.config import OptimConfig, SchedConfig
from cnnlab.errors import ConfigError
from cnnlab.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("lr schedule")


def _fast(device: torch.device) -> dict:
    # Fused kernels on CUDA; multi-tensor (foreach) elsewhere. The CPU's fused Adam is
    # faster (LeNet-5: 176 µs against 495 µs per step here) but its result depends on where
    # the tensors lie in memory (vector body vs scalar tail), so a run resumed from a
    # checkpoint no longer matches the uninterrupted one bit for bit: not used.
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


@OPTIMIZERS.register("sgd")
def _sgd(params, c: OptimConfig, device):
    return torch.optim.SGD(
        params,
        lr=c.lr,
        momentum=c.momentum,
        nesterov=c.nesterov and c.momentum > 0,
        weight_decay=c.weight_decay,
        **_fast(device),
    )


def _adam_like(cls):
    """Adam and AdamW take the same options (AdamW decouples the weight decay)."""

    def build(params, c: OptimConfig, device):
        return cls(
            params,
            lr=c.lr,
            betas=(c.beta1, c.beta2),
            eps=c.eps,
            weight_decay=c.weight_decay,
            **_fast(device),
        )

    return build


OPTIMIZERS.register("adam", _adam_like(torch.optim.Adam))
OPTIMIZERS.register("adamw", _adam_like(torch.optim.AdamW))


@OPTIMIZERS.register("adagrad")
def _adagrad(params, c: OptimConfig, device):
    return torch.optim.Adagrad(
        params,
        lr=c.lr,
        eps=c.eps if c.eps != 1e-8 else 1e-10,
        weight_decay=c.weight_decay,
        foreach=True,
    )


@OPTIMIZERS.register("rmsprop")
def _rmsprop(params, c: OptimConfig, device):
    return torch.optim.RMSprop(
        params,
        lr=c.lr,
        alpha=c.beta2 if c.beta2 != 0.999 else 0.99,
        eps=c.eps,
        momentum=c.momentum if c.nesterov else 0.0,
        weight_decay=c.weight_decay,
        foreach=True,
    )


def build_optimizer(
    model: torch.nn.Module, c: OptimConfig, device=None, groups: list[dict] | None = None
) -> torch.optim.Optimizer:
    """The optimiser ``c`` names over the model's trainable parameters, or over ``groups``
    (parameter groups with their own ``lr``, e.g. fine-tuning's head and backbone)."""
    if c.lr == "auto":
        raise ConfigError(
            "optim.lr=auto is chosen by cnnlab train / cnnlab.fit (an LR range test before "
            "training); here give a number, e.g. from `cnnlab lr-find`"
        )
    device = torch.device(device or "cpu")
    params = groups or [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.get(c.name)(params, c, device)


class OptimizerStep:
    """Backward, gradient clipping, fp16 loss scaling and the optimiser step: the one
    update every Task's step goes through (``Trainer.step_optimizer``), so a policy added
    here (clipping, GradScaler, the NaN skip) reaches every Task at once.

    ``skip_nonfinite`` (``train.nan_policy=skip``): gradients are checked before the
    optimiser moves (one host sync per step); a non-finite one skips the update and sets
    ``skipped`` for the Trainer to read. With fp16 the GradScaler does its own skipping of
    inf/NaN steps (that is how it finds its scale) and the check is left to it."""

    def __init__(self, clip: float = 0.0, fp16: bool = False, skip_nonfinite: bool = False):
        self.clip = float(clip)
        self.fp16 = bool(fp16)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped = False
        self._scalers: dict[int, torch.amp.GradScaler] = {}  # id(optimizer) → its scaler

    def scaler(self, opt: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
        """The optimiser's GradScaler (fp16 only), on the device of its parameters."""
        if not self.fp16:
            return None
        if id(opt) not in self._scalers:
            dev = next(p.device.type for g in opt.param_groups for p in g["params"])
            self._scalers[id(opt)] = torch.amp.GradScaler(dev)
        return self._scalers[id(opt)]

    def __call__(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params=None,
                 foreach: bool | None = None) -> None:  # fmt: skip
        params = list(params) if params is not None else [
            p for g in opt.param_groups for p in g["params"]
        ]  # fmt: skip
        opt.zero_grad(set_to_none=True)
        scaler = self.scaler(opt)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None and self.clip > 0:
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        if self.skip_nonfinite and scaler is None and not grads_finite(opt):
            opt.zero_grad(set_to_none=True)
            self.skipped = True
            return
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.clip, foreach=foreach)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def state(self, optimizers: list) -> list[dict | None]:
        """The scalers' states in the optimisers' order (JSON-able; None: no scaler)."""
        out = []
        for opt in optimizers:
            sc = self._scalers.get(id(opt))
            out.append({k: float(v) for k, v in sc.state_dict().items()} if sc else None)
        return out

    def load_state(self, optimizers: list, states) -> None:
        for opt, st in zip(optimizers, states or [], strict=False):
            sc = self.scaler(opt)
            if sc is not None and isinstance(st, dict):
                st = dict(st)
                st["_growth_tracker"] = int(st.get("_growth_tracker", 0))
                sc.load_state_dict(st)


def grads_finite(opt: torch.optim.Optimizer) -> bool:
    """Whether every gradient the optimiser would apply is finite (one host sync)."""
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def set_lr(group: dict, lr: float) -> None:
    """Set an optimiser group's LR in place (a captured step reads a tensor LR on the device)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


class Schedule:
    """lr(step) = base_lr × factor(step); call ``step()`` after every optimiser step
    and ``epoch_end(metric)`` after every epoch."""

    def __init__(
        self,
        opts: torch.optim.Optimizer | list[torch.optim.Optimizer],
        c: SchedConfig,
        epochs: int,
        steps_per_epoch: int,
    ):
        SCHEDULES.get(c.name)
        self.opts = [opts] if isinstance(opts, torch.optim.Optimizer) else list(opts)
        self.c = c
        self.name = c.name
        self.total = max(1, epochs * steps_per_epoch)
        self.spe = max(1, steps_per_epoch)
        self.warmup = int(round(c.warmup_epochs * self.spe))
        self.base = [float(g.get("initial_lr", g["lr"])) for g in self.groups]
        for g, b in zip(self.groups, self.base, strict=True):
            g["initial_lr"] = b
        self.step_num = 0
        self.plateau = {"best": None, "bad": 0, "factor": 1.0}
        self.apply()

    @property
    def groups(self) -> list[dict]:
        """Every optimiser's parameter groups (looked up each time: loading an optimiser's
        state replaces its group dicts)."""
        return [g for o in self.opts for g in o.param_groups]

    def factor(self, s: int) -> float:
        c = self.c
        if self.name == "onecycle":  # Smith & Topin: cosine up from lr/25, cosine down to lr/1e4
            up = max(1, int(c.pct_start * self.total))
            if s < up:
                return _cos(1 / 25, 1.0, s / up)
            return _cos(1.0, 1 / 1e4, min(1.0, (s - up) / max(1, self.total - up)))
        if self.warmup and s < self.warmup:
            return (s + 1) / self.warmup
        if self.name == "cosine":
            t = (s - self.warmup) / max(1, self.total - self.warmup)
            lo = c.min_lr / self.base[0] if self.base[0] else 0.0
            return _cos(1.0, lo, min(1.0, t))
        if self.name == "step":
            return c.gamma ** ((s // self.spe) // max(1, c.step_size))
        if self.name == "plateau":
            return self.plateau["factor"]
        return 1.0

    def apply(self) -> None:
        f = self.factor(self.step_num)
        lrs = [b * f for b in self.base]
        if lrs == getattr(self, "_lrs", None):
            return  # unchanged: no device write
        self._lrs = lrs
        for g, lr in zip(self.groups, lrs, strict=True):
            set_lr(g, lr)

    def step(self) -> None:
        self.step_num += 1
        self.apply()

    def epoch_end(self, metric: float | None = None) -> None:
        if self.name == "plateau" and metric is not None:
            p = self.plateau
            if p["best"] is None or metric > p["best"] + 1e-4:
                p["best"], p["bad"] = metric, 0
            else:
                p["bad"] += 1
                if p["bad"] > self.c.patience:
                    p["factor"] *= self.c.gamma
                    p["bad"] = 0
            self.apply()

    @property
    def lr(self) -> float:
        return self._lrs[0]

    def state_dict(self) -> dict:
        return {"step_num": self.step_num, "plateau": dict(self.plateau)}

    def load_state_dict(self, d: dict) -> None:
        self.step_num = int(d["step_num"])
        self.plateau = dict(d.get("plateau", self.plateau))
        self.apply()


def _cos(start: float, end: float, t: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


for _n in ("constant", "step", "cosine", "onecycle", "plateau"):
    SCHEDULES.register(_n, _n)
