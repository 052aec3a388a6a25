"""The GAN task: a (conditional) DCGAN, trained by the one Trainer, scored by a judge.

The standard DCGAN recipe ships as ``recipes/dcgan.yaml``: Adam(2e-4, β=(0.5, 0.999)),
batch 128, images scaled to [-1, 1], non-saturating generator loss (BCE against "real").
The Trainer writes the run directory as for any task (``config.yaml``, ``metrics.jsonl``,
``checkpoints/last.safetensors`` with G and D by name, both optimisers and all RNG state);
this task adds ``samples/epoch_XXX.png`` (a fixed-noise grid; one row per class for a
conditional model), ``losses.png`` and, with a judge, ``fid.png``. There is no ``best``
checkpoint: a GAN has no score that picks one reliably. The step runs eagerly (no CUDA
graph or compile: two networks, two optimisers, noise drawn each step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.analysis.frechet import Judge, feature_stats, frechet_from_stats
from cnnlab.analysis.generate import sample
from cnnlab.data.loader import ResidentLoader
from cnnlab.errors import ConfigError
from cnnlab.models.gan import SIZES, create_gan
from cnnlab.train.callbacks import write_gan_figures
from cnnlab.train.optim import build_optimizer
from cnnlab.train.task import Task


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GanTask(Task):
    kind = "gan"
    monitor = None
    resume_keys = (
        *Task.resume_keys,
        ("gan", ("conditional", "aux_weight", "z_dim", "width")),
    )

    # -- set-up -------------------------------------------------------------------------

    def build(self, ctx) -> None:
        self.ctx = ctx
        cfg, ds, dev = ctx.cfg, ctx.dataset, ctx.rt.device
        g = cfg.gan
        if ctx.dist.enabled:
            raise ConfigError("a GAN trains in one process: run it without torchrun")
        if getattr(ds, "streaming", False) or ds.size not in SIZES:
            raise ConfigError(
                f"dataset {ds.name!r} has {ds.size} px images; a DCGAN here needs "
                f"{' or '.join(map(str, SIZES))} px"
            )
        self.cfg, self.dataset, self.device = cfg, ds, dev
        # the step runs eagerly: the runtime's description must not claim graphs or compile
        ctx.rt.cuda_graph = ctx.rt.compile = False
        self.autocast = ctx.rt.autocast
        self.generator = ctx.generator
        self.classes = list(ds.classes)
        xtr, ytr = ds.train_x, ds.train_y
        if cfg.data.train_limit:
            xtr, ytr = xtr[: cfg.data.train_limit], ytr[: cfg.data.train_limit]
        # mean = std = 0.5 maps uint8 [0, 255] to [-1, 1], the range of the tanh output
        self.loader = ResidentLoader(
            xtr,
            ytr,
            min(cfg.train.batch_size, len(xtr)),
            mean=(0.5,),
            std=(0.5,),
            shuffle=True,
            drop_last=True,
            device=dev,
            generator=self.generator,
        )
        self.G, self.D = create_gan(
            cfg.model.name, ds.channels, ds.size, len(self.classes), g.z_dim, g.width
        )
        self.G.to(dev)
        self.D.to(dev)
        self.conditional = bool(self.G.num_classes)
        self.aux = g.aux_weight if self.D.aux_classes else 0.0
        self.opt_g = build_optimizer(self.G, cfg.optim, dev)
        self.opt_d = build_optimizer(self.D, cfg.optim, dev)
        self._fixed_noise()
        self._setup_judge()
        self._order: torch.Tensor | None = None
        self._batches = None
        self._next = -1
        self._last: dict = {}  # the epoch's train metrics, for the curves evaluate() draws

    def _fixed_noise(self) -> None:
        """The same noise (and labels) every epoch, so the grids show progress. Drawn from
        its own generator: the training stream (ctx.generator) is left untouched."""
        g, dev = self.cfg.gan, self.device
        gen = torch.Generator().manual_seed(self.cfg.train.seed + 1)
        if self.conditional:
            k, n = len(self.classes), g.grid
            z = torch.randn(n, g.z_dim, generator=gen)
            self.fixed_z = z.repeat(k, 1).to(dev)  # same z down a column: style vs class
            self.fixed_y = torch.arange(k).repeat_interleave(n).to(dev)  # one row per class
            self.grid_cols = n
        else:
            self.fixed_z = torch.randn(g.grid * g.grid, g.z_dim, generator=gen).to(dev)
            self.fixed_y = None
            self.grid_cols = g.grid

    def _setup_judge(self) -> None:
        cfg, ds = self.cfg, self.dataset
        self.judge = None
        self.fd_real = None
        if not cfg.gan.judge:
            return
        judge = Judge.load(cfg.gan.judge, device=self.device)
        if (judge.channels, judge.size) != (ds.channels, ds.size):
            raise ConfigError(
                f"judge {cfg.gan.judge} takes {judge.channels}×{judge.size}×{judge.size} "
                f"images but {ds.name} has {ds.channels}×{ds.size}×{ds.size}; use a judge "
                "trained on it"
            )
        if self.conditional and judge.classes != self.classes:
            raise ConfigError(
                f"judge {cfg.gan.judge} has classes {judge.classes[:4]}... but {ds.name} has "
                f"{self.classes[:4]}...; class fidelity needs a judge trained on the same classes"
            )
        self.judge = judge
        n = min(cfg.gan.eval_samples, len(ds.test_x))
        g = torch.Generator().manual_seed(cfg.train.seed + 2)
        idx = torch.randperm(len(ds.test_x), generator=g)[:n]
        real = ds.test_x[idx].float().div(127.5).sub(1)  # (n, C, H, W) in [-1, 1]
        feats, logits = judge.features_and_logits(real)
        self.real_stats = feature_stats(feats)
        # The judge's accuracy on the same real images: the ceiling for class fidelity.
        self.judge_acc = (
            (logits.argmax(1) == ds.test_y[idx].to(logits.device)).float().mean().item()
        )
        # The same number of *training* images gives the floor the score can reach.
        idx_tr = torch.randperm(len(ds.train_x), generator=g)[:n]
        feats_tr, _ = judge.features_and_logits(ds.train_x[idx_tr].float().div(127.5).sub(1))
        self.fd_real = frechet_from_stats(*feature_stats(feats_tr), *self.real_stats)
        self.eval_z = torch.randn(n, cfg.gan.z_dim, generator=g).to(self.device)
        self.eval_y = (torch.arange(n) % len(self.classes)).to(self.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g, self.opt_d]

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def describe(self) -> str:
        n_g = sum(p.numel() for p in self.G.parameters())
        n_d = sum(p.numel() for p in self.D.parameters())
        text = (
            f"{self.cfg.model.name} (G {n_g:,} + D {n_d:,} params) on {self.dataset.name} "
            f"[{len(self.loader.x):,} images, {len(self.loader)} steps/epoch]"
        )
        if self.judge is not None:
            text += (
                f"; judge {self.cfg.gan.judge} (Fréchet distance real train vs test "
                f"{self.fd_real:.3f})"
            )
        return text

    # -- the step -----------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        self._order = self.loader.order()  # from ctx.generator
        self._batches = None

    def _batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batches is None or i != self._next:  # first step, or a resume at step i
            self._batches = self.loader.iterate(i, self._order)
        self._next = i + 1
        return next(self._batches)

    def step(self, i: int) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        x, y = self._batch(i)
        b = x.shape[0]
        G, D, aux, rl = self.G, self.D, self.aux, self.cfg.gan.real_label
        z = torch.randn(b, self.cfg.gan.z_dim, device=self.device, generator=self.generator)
        yc = y if self.conditional else None
        with self.autocast():
            fake = G(z, yc)
            # D step: real → real_label, fake → 0 (fake detached: G is not updated here)
            if aux:  # AC-GAN: D also classifies real and fake images (Odena et al. 2017)
                d_real, c_real = D(x, with_class=True)
                d_fake, c_fake = D(fake.detach(), with_class=True)
                loss_d = bce(d_real, rl) + bce(d_fake, 0.0)
                loss_d = loss_d + aux * (F.cross_entropy(c_real, y) + F.cross_entropy(c_fake, y))
                acc = (c_real.detach().argmax(1) == y).float().mean()
            else:
                d_real = D(x, yc)
                d_fake = D(fake.detach(), yc)
                loss_d = bce(d_real, rl) + bce(d_fake, 0.0)
        self.ctx.step_optimizer(loss_d, self.opt_d, D.parameters())
        # G step, non-saturating: make D call the fakes real (and of their class)
        with self.autocast():
            if aux:
                g_adv, g_cls = D(fake, with_class=True)
                loss_g = bce(g_adv, 1.0) + aux * F.cross_entropy(g_cls, y)
            else:
                loss_g = bce(D(fake, yc), 1.0)
        self.ctx.step_optimizer(loss_g, self.opt_g, G.parameters())
        # The Trainer adds loss·b to loss_sum and these to its device sums; every sum is
        # per image, so a resumed part of an epoch adds up. loss = loss_d + loss_g: a
        # non-finite value in either network shows in the Trainer's NaN check.
        extra = {
            "loss_d": loss_d.detach().float() * b,
            "loss_g": loss_g.detach().float() * b,
            "d_real": torch.sigmoid(d_real.detach().float()).mean() * b,
            "d_fake": torch.sigmoid(d_fake.detach().float()).mean() * b,
        }
        if aux:
            extra["d_class_acc"] = acc * b
        return (loss_d + loss_g).detach().float(), b, extra

    def epoch_metrics(self, sums: dict[str, float], steps: int) -> dict:
        n = max(float(sums["n"]), 1.0)
        m = {k: float(sums[k]) / n for k in ("loss_d", "loss_g", "d_real", "d_fake")}
        if self.aux:
            m["d_class_acc"] = float(sums["d_class_acc"]) / n  # D's accuracy on real images
        m["train_loss"] = float(sums["loss_sum"]) / n  # loss_d + loss_g
        m["steps"] = steps
        self._last = dict(m)
        return m

    # -- the epoch's end ----------------------------------------------------------------

    def sample_fixed(self) -> torch.Tensor:
        return self._sample(self.fixed_z, self.fixed_y)

    def _sample(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        self.G.eval()
        try:
            return sample(self.G, z, y)
        finally:
            self.G.train()

    def score(self) -> dict:
        """Judge scores of samples from the fixed evaluation noise."""
        fake = self._sample(self.eval_z, self.eval_y if self.conditional else None)
        feats, logits = self.judge.features_and_logits(fake)
        m = {"fd": frechet_from_stats(*feature_stats(feats), *self.real_stats)}
        if self.conditional:
            m["class_fidelity"] = (logits.argmax(1) == self.eval_y).float().mean().item()
        m["fd_real"] = self.fd_real
        if self.conditional:
            m["judge_acc_real"] = self.judge_acc
        return m

    def evaluate(self, epoch: int) -> dict:
        m = self.score() if self.judge is not None else {}
        tr = self.ctx
        if tr.dist.main:
            history = None
            if self._last:
                # the trainer's history holds the epochs before this one (resumed ones too)
                past = [r for r in tr.history if r.get("epoch", 0) < epoch]
                history = [*past, {"epoch": epoch, **self._last, **m}]
            samples = self.sample_fixed()
            write_gan_figures(tr.run_dir, epoch, samples, self.grid_cols, history, self.fd_real)
        return m

    def meta(self) -> dict:
        ds = self.dataset
        return {
            "gan": self.G.cnnlab_args,
            "classes": self.classes,
            "dataset": ds.name,
            "input": {"channels": ds.channels, "size": ds.size, "range": [-1, 1]},
        }


__all__ = ["GanTask"]
