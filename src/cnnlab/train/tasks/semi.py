"""Semi-supervised learning: a few labelled images per class, the rest unlabelled.

``--set data.labels_per_class=N`` keeps N labelled training images per class (chosen by
``train.seed``); every other training image is used without its label. With
``train.semi=none`` this is the supervised-only baseline on the same labelled images,
the same augmentation and the same number of steps; the methods:

* ``pseudo_label`` (Lee 2013): the model's own confident predictions on weakly augmented
  unlabelled images become targets for the same images.
* ``mean_teacher`` (Tarvainen & Valpola 2017): an EMA copy of the model is the teacher; the
  student's softmax on one augmentation is pulled (MSE) towards the teacher's on another.
* ``fixmatch`` (Sohn et al. 2020): the prediction on a weak augmentation, kept when its
  confidence ≥ ``train.semi_threshold``, is the hard target for a strong augmentation of
  the same image. Pseudo-labels come from the EMA teacher when ``train.ema`` > 0, and are
  distribution-aligned (ReMixMatch, Berthelot et al. 2020) when ``train.semi_align``.

Weak and strong augmentations run batched on the device (``weak_augment``,
``strong_augment``). When an EMA teacher is kept, it is the model that is evaluated and
saved (as FixMatch and Mean Teacher report); the student is saved beside it, so a resumed
run continues exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnlab.data import augment as aug
from cnnlab.errors import ConfigError
from cnnlab.train.tasks.classify import ClassifyTask

METHODS = ("none", "pseudo_label", "mean_teacher", "fixmatch")


def split_labelled(y: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labelled, unlabelled) disjoint index sets: ``per_class`` random images of each class
    are labelled, fixed by ``seed``; all the others are unlabelled."""
    g = torch.Generator().manual_seed(20_000 + seed)
    labelled = []
    classes = torch.unique(y)
    for c in classes.tolist():
        idx = (y == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ConfigError(
                f"data.labels_per_class={per_class} but class {c} has only {len(idx)} training "
                "images; lower data.labels_per_class"
            )
        labelled.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    lab = torch.cat(labelled).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[lab] = False
    return lab, mask.nonzero().flatten()


# -- batched augmentations on [0, 1] pixels ---------------------------------------------


def _u(n: int, lo: float, hi: float, dev, g) -> torch.Tensor:
    return torch.empty(n, device=dev).uniform_(lo, hi, generator=g)


def random_affine(
    x: torch.Tensor,
    rotate: float = 30.0,
    shear: float = 0.3,
    translate: float = 0.125,
    scale=(0.8, 1.2),
    generator=None,
) -> torch.Tensor:
    """A random rotation/shear/translation/scale per image via affine_grid + grid_sample."""
    b, dev, g = x.shape[0], x.device, generator
    a = _u(b, -rotate, rotate, dev, g) * (math.pi / 180)
    sh = _u(b, -shear, shear, dev, g)
    s = _u(b, scale[0], scale[1], dev, g)
    tx, ty = _u(b, -translate, translate, dev, g) * 2, _u(b, -translate, translate, dev, g) * 2
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack(
        [
            torch.stack([cos, -sin + sh * cos, tx], 1),
            torch.stack([sin, cos + sh * sin, ty], 1),
        ],
        1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(x: torch.Tensor, strength: float = 0.5, generator=None) -> torch.Tensor:
    """Random contrast, brightness and gamma per image."""
    b, dev, g = x.shape[0], x.device, generator
    c = _u(b, 1 - strength, 1 + strength, dev, g).reshape(b, 1, 1, 1)
    br = _u(b, -strength * 0.6, strength * 0.6, dev, g).reshape(b, 1, 1, 1)
    gamma = torch.exp(_u(b, -strength, strength, dev, g)).reshape(b, 1, 1, 1)
    m = x.mean((1, 2, 3), keepdim=True)
    x = ((x - m) * c + m + br).clamp(0, 1)
    return x.clamp_min(1e-6).pow(gamma)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], a, b)


def weak_augment(x: torch.Tensor, pad: int = 2, generator=None) -> torch.Tensor:
    """Flip + pad-and-crop (FixMatch's weak augmentation)."""
    return aug.random_crop(aug.random_flip(x, generator), pad, generator)


def strong_augment(x: torch.Tensor, pad: int = 2, generator=None) -> torch.Tensor:
    """RandAugment-like, batched: weak + (each with probability ½) affine, colour jitter,
    solarise, posterise, noise; then cutout always (as FixMatch)."""
    b, dev, g = x.shape[0], x.device, generator
    x = weak_augment(x, pad, g)

    def coin() -> torch.Tensor:
        return torch.rand(b, device=dev, generator=g) < 0.5

    x = _where(coin(), random_affine(x, generator=g), x)
    x = _where(coin(), color_jitter(x, generator=g), x)
    t = _u(b, 0.5, 1.0, dev, g).reshape(b, 1, 1, 1)
    x = _where(coin(), torch.where(x > t, 1 - x, x), x)  # solarise above t
    levels = 2.0 ** torch.randint(2, 5, (b, 1, 1, 1), device=dev, generator=g)
    x = _where(coin(), torch.floor(x * levels) / (levels - 1), x).clamp(0, 1)  # posterise
    x = _where(coin(), aug.gaussian_noise(x, 0.08, g), x)
    return aug.random_erase(x, p=1.0, scale=(0.05, 0.25), generator=g)


# -- the trainer -----------------------------------------------------------------------


class Cycle:
    """Endless random batches of indices into ``n`` items (a new permutation each pass)."""

    def __init__(self, n: int, batch: int, device, generator):
        self.n, self.batch, self.dev, self.g = n, batch, device, generator
        self.perm, self.pos = torch.zeros(n, dtype=torch.long, device=device), n

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            g = self.g
            self.perm = torch.randperm(self.n, generator=g, device=g.device).to(self.dev)
            self.pos = 0
        j = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return j


class SemiTask(ClassifyTask):
    """Trains on ``data.labels_per_class`` labelled images (+ the unlabelled rest with
    ``train.semi``); evaluation and everything around the step are the classifier's."""

    # the labelled split, the EMA teacher and the class prior are saved state
    resume_keys = (
        *ClassifyTask.resume_keys,
        ("train", ("semi", "ema")),
        ("data", ("labels_per_class",)),
    )

    def select_train(self, x, y):
        t = self.cfg.train
        lab, unl = split_labelled(y, self.cfg.data.labels_per_class, t.seed)
        self.labelled_count = len(lab)
        self.unlabelled_x = x[unl]  # no labels kept for these
        return x[lab], y[lab]

    def build(self, ctx) -> None:
        super().build(ctx)
        t = self.cfg.train
        self.method = t.semi
        if self.method not in METHODS:
            raise ConfigError(f"unknown semi-supervised method {self.method!r}")
        dev = self.rt.device
        self.unlabelled_x = self.unlabelled_x.to(dev)
        self.mu = t.semi_ratio
        n_lab = len(self.train_loader.x)
        self.lab_batch = min(t.batch_size, n_lab)
        self.lab_cycle = Cycle(n_lab, self.lab_batch, dev, self.generator)
        nu = len(self.unlabelled_x)
        if self.method != "none" and nu == 0:
            raise ConfigError(
                f"train.semi={self.method} has no unlabelled images left: lower "
                "data.labels_per_class"
            )
        self.unl_cycle = (
            Cycle(nu, min(nu, self.mu * self.lab_batch), dev, self.generator)
            if self.method != "none" and nu
            else None
        )
        nc = ctx.dataset.num_classes
        self.p_model = torch.full((nc,), 1.0 / nc, device=dev)  # running mean prediction

    def make_step(self):
        return self.semi_step

    def steps_per_epoch(self) -> int:
        t = self.cfg.train
        if t.steps_per_epoch:
            return t.steps_per_epoch
        if t.semi != "none":
            b = min(t.batch_size, len(self.train_loader.x))
            return max(1, math.ceil(len(self.unlabelled_x) / (t.semi_ratio * b)))
        return len(self.train_loader)

    def describe(self) -> str:
        return (
            super().describe()
            + f" — {self.cfg.data.labels_per_class}/class labelled ({self.labelled_count:,}), "
            f"{len(self.unlabelled_x):,} unlabelled, semi={self.cfg.train.semi}"
        )

    # the EMA teacher (ClassifyTask's weight average, cnnlab.train.ema, here at a fixed
    # decay from the first step) is the model that is evaluated and saved; the student is
    # kept in the task's state
    ema_warmup = False

    def ema_decay_setting(self) -> float:
        t = self.cfg.train
        return t.ema or (0.99 if t.semi == "mean_teacher" else 0.0)

    def state(self):
        tensors, meta = super().state()
        tensors.update({"p_model": self.p_model, "lab_perm": self.lab_cycle.perm})
        meta["lab_pos"] = self.lab_cycle.pos
        if self.unl_cycle is not None:
            tensors["unl_perm"] = self.unl_cycle.perm
            meta["unl_pos"] = self.unl_cycle.pos
        return tensors, meta

    def load_state(self, tensors, meta) -> None:
        if not tensors:  # a checkpoint of an older version: the cycles start afresh
            return
        self.p_model.copy_(tensors["p_model"])
        self.lab_cycle.perm = tensors["lab_perm"].to(self.rt.device)
        self.lab_cycle.pos = int(meta["lab_pos"])
        if self.unl_cycle is not None:
            self.unl_cycle.perm = tensors["unl_perm"].to(self.rt.device)
            self.unl_cycle.pos = int(meta["unl_pos"])
        super().load_state(tensors, meta)

    def unlabelled_weight(self) -> float:
        t = self.cfg.train
        if t.semi_rampup <= 0:
            return t.semi_weight
        sch = self.ctx.schedule
        r = min(1.0, sch.step_num / max(1, t.semi_rampup * sch.total))
        return t.semi_weight * math.exp(-5 * (1 - r) ** 2)  # Laine & Aila's sigmoid ramp

    def pseudo_targets(self, logits_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = logits_weak.float().softmax(1)
        if self.cfg.train.semi_align:
            self.p_model.mul_(0.999).add_(p.mean(0), alpha=0.001)
            # uniform class prior (balanced labelled set): p ← p / p_model, renormalised
            p = p / self.p_model.clamp_min(1e-6)
            p = p / p.sum(1, keepdim=True)
        conf, target = p.max(1)
        return target, (conf >= self.cfg.train.semi_threshold).float()

    def step(self, i: int):
        lab = self.train_loader
        j = self.lab_cycle.next()
        x, y = lab.prepare(lab.x[j], True), lab.y[j]
        xu01 = None
        if self.unl_cycle is not None:
            xu01 = lab.pixels(self.unlabelled_x[self.unl_cycle.next()], False)
        loss, corr, mask = self.semi_step(x, y, xu01)
        extra = {"correct": corr}
        if mask is not None:
            extra["mask"] = mask
        return loss, len(y), extra

    def epoch_metrics(self, sums, steps) -> dict:
        m = super().epoch_metrics(sums, steps)
        if self.method in ("pseudo_label", "fixmatch"):
            m["pseudo_label_rate"] = sums.get("mask", 0.0) / max(steps, 1)
        return m

    def semi_step(self, x, y, xu01):
        # the DDP-wrapped model where there is one (the gradients are all-reduced)
        model, opt, rt, loss_fn = self.train_model, self.optimizer, self.rt, self.loss_fn
        method = self.method
        pad = self.cfg.data.pad
        g = self.generator if self.generator.device == x.device else None
        norm = self.train_loader.normalize
        mask = None
        with rt.autocast():
            if method == "none":
                out = model(x)
                loss = loss_fn(out, y)
            elif method == "pseudo_label":
                xw = norm(weak_augment(xu01, pad, g))
                out_all = model(torch.cat([x, xw]))
                out, out_u = out_all[: len(x)], out_all[len(x) :]
                target, mask = self.pseudo_targets(out_u.detach())
                lu = (F.cross_entropy(out_u.float(), target, reduction="none") * mask).mean()
                loss = loss_fn(out, y) + self.unlabelled_weight() * lu
            elif method == "mean_teacher":
                xs = norm(weak_augment(xu01, pad, g))
                xt = norm(weak_augment(xu01, pad, g))
                out_all = model(torch.cat([x, xs]))
                out, out_u = out_all[: len(x)], out_all[len(x) :]
                with torch.no_grad():
                    pt = self.ema.model(xt).float().softmax(1)
                lu = F.mse_loss(out_u.float().softmax(1), pt, reduction="sum") / len(xs)
                loss = loss_fn(out, y) + self.unlabelled_weight() * lu
            else:  # fixmatch
                xw = norm(weak_augment(xu01, pad, g))
                xs = norm(strong_augment(xu01, pad, g))
                with torch.no_grad():
                    teacher = self.ema.model if self.ema is not None else model
                    out_w = teacher(xw)
                target, mask = self.pseudo_targets(out_w)
                out_all = model(torch.cat([x, xs]))
                out, out_s = out_all[: len(x)], out_all[len(x) :]
                lu = (F.cross_entropy(out_s.float(), target, reduction="none") * mask).mean()
                loss = loss_fn(out, y) + self.unlabelled_weight() * lu
        self.ctx.step_optimizer(loss, opt, model.parameters())  # clipped per model
        if self.ema is not None:
            self.ema.update(self.model)
        m = None if mask is None else mask.mean()
        return loss.detach(), (out.detach().argmax(1) == y).sum(), m
