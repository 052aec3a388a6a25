"""Train a (conditional) DCGAN on a device-resident dataset, scored by a judge classifier.

The standard DCGAN recipe: Adam(2e-4, β=(0.5, 0.999)), batch 128, images scaled to
[-1, 1], non-saturating generator loss (BCE against "real"). A run directory like
``train`` writes: ``config.yaml``, ``metrics.jsonl`` (per epoch: G and D losses, D(x),
D(G(z)), and with a judge the feature-space Fréchet distance and class fidelity),
``checkpoints/last.safetensors`` (G and D as one ``nn.ModuleDict``, both optimisers and
all RNG state, for an exact resume), ``samples/epoch_XXX.png`` (a fixed-noise grid; one
row per class for the conditional model) and ``fid.png`` / ``losses.png`` curves.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import typing
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cnnlab._version import __version__
from cnnlab.config import coerce
from cnnlab.data.datasets import DATASETS, Dataset, load_dataset
from cnnlab.data.loader import ResidentLoader
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError, choices_msg
from cnnlab.models.gan import SIZES, create_gan
from cnnlab.registry import check_kwargs
from cnnlab.runs.checkpoint import (
    load_checkpoint,
    optim_join,
    optim_split,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text
from cnnlab.runs.layout import read_metrics
from cnnlab.runtime.device import resolve_device

SECTIONS = ("model", "data", "optim", "train", "run", "gan")  # accepted as --set prefixes


@dataclass
class GanConfig:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = True
    train_limit: int | None = None  # use only the first N training images
    data_args: dict = dataclasses.field(default_factory=dict)  # loader options (data.<key>)
    conditional: bool = False
    aux_weight: float = 0.0  # > 0: AC-GAN (D also classifies; class loss with this weight)
    z_dim: int = 100
    width: int = 64  # generator/discriminator base channels (DCGAN paper: 64+)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    real_label: float = 1.0  # < 1 for one-sided label smoothing (Salimans et al. 2016)
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads (0 = torch's default)
    judge: str | None = None  # a classifier run used for the Fréchet distance / fidelity
    eval_samples: int = 2000  # real and generated images per score
    grid: int = 8  # fixed-noise grid: grid×grid images (conditional: classes × grid)
    name: str | None = None
    runs_dir: str = "runs"

    @property
    def model(self) -> str:
        if self.aux_weight > 0:
            return "dcgan-ac"
        return "dcgan-conditional" if self.conditional else "dcgan"

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


FIELDS = {f.name: f for f in dataclasses.fields(GanConfig)}


def set_gan_value(cfg: GanConfig, key: str, value) -> None:
    """``epochs=5`` or with a section prefix as in ``train``: ``train.threads=1``."""
    k = key.strip()
    if "." in k:
        sec, k = k.split(".", 1)
        if sec not in SECTIONS:
            raise ConfigError(f"unknown config key {key!r}; GAN keys: {', '.join(FIELDS)}")
    if key.strip() == "data.name":
        k = "dataset"
    elif key.strip().startswith("data.") and k not in FIELDS:
        cfg.data_args[k] = value  # a dataset loader option, checked in validate_gan
        return
    if k not in FIELDS:
        raise ConfigError(f"unknown config key {key!r}; GAN keys: {', '.join(FIELDS)}")
    tp = typing.get_type_hints(GanConfig)[k]
    setattr(cfg, k, coerce(value, tp, key))


def build_gan_config(base: GanConfig | dict | None = None, overrides=None, **kw) -> GanConfig:
    if isinstance(base, GanConfig):
        cfg = dataclasses.replace(base, data_args=dict(base.data_args))
    else:
        cfg = GanConfig()
        for k, v in (base or {}).items():
            set_gan_value(cfg, k, v)
    for o in overrides or []:
        if "=" not in o:
            raise ConfigError(f"--set needs key=value, got {o!r} (e.g. --set train.threads=1)")
        k, v = o.split("=", 1)
        try:
            v = yaml.safe_load(v)
        except yaml.YAMLError:
            pass
        set_gan_value(cfg, k, v)
    for k, v in kw.items():
        if v is not None:
            set_gan_value(cfg, k, v)
    return validate_gan(cfg)


def validate_gan(cfg: GanConfig) -> GanConfig:
    spec = DATASETS.get(cfg.dataset)
    check_kwargs("dataset", spec.name, spec.loader, cfg.data_args, skip=("folder",))
    checks = [
        (cfg.epochs >= 1, f"epochs must be ≥ 1, got {cfg.epochs}"),
        (cfg.batch_size >= 2, f"batch size must be ≥ 2, got {cfg.batch_size}"),
        (cfg.lr > 0, f"learning rate must be > 0, got {cfg.lr}"),
        (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
        (0 < cfg.real_label <= 1, f"real_label must be in (0, 1], got {cfg.real_label}"),
        (cfg.z_dim >= 1, f"z_dim must be ≥ 1, got {cfg.z_dim}"),
        (cfg.width >= 1, f"width must be ≥ 1, got {cfg.width}"),
        (cfg.eval_samples >= 10, f"eval_samples must be ≥ 10, got {cfg.eval_samples}"),
        (cfg.grid >= 1, f"grid must be ≥ 1, got {cfg.grid}"),
        (
            cfg.train_limit is None or cfg.train_limit >= 2,
            f"train_limit must be ≥ 2, got {cfg.train_limit}",
        ),
        (cfg.threads >= 0, f"threads must be ≥ 0, got {cfg.threads}"),
        (cfg.aux_weight >= 0, f"aux_weight must be ≥ 0, got {cfg.aux_weight}"),
        (
            cfg.aux_weight == 0 or cfg.conditional,
            "aux_weight > 0 (AC-GAN) needs a conditional GAN; add --conditional",
        ),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    dev = cfg.device.lower()
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        raise ConfigError(f"unknown device {cfg.device!r}; choose one of: auto, cpu, cuda, cuda:N")
    return cfg


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


@dataclass
class GanResult:
    run_dir: Path
    history: list[dict]

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


class GanTrainer:
    def __init__(
        self,
        cfg: GanConfig,
        dataset: Dataset | None = None,
        resume: str | os.PathLike | None = None,
        quiet: bool = False,
    ):
        self.cfg = validate_gan(cfg)
        self.dataset = dataset
        self.resume_from = Path(resume) if resume else None
        self.quiet = quiet

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    # -- set-up -------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if self.resume_from is not None:
            return self.resume_from
        c = self.cfg
        name = c.name or f"{c.model}-{c.dataset}-{datetime.now():%Y%m%d-%H%M%S}"
        d = Path(c.runs_dir) / name
        if d.exists() and any(d.iterdir()):
            if c.name:
                raise CnnlabError(
                    f"run {d} already exists; continue it with --resume {d} or choose another --name"
                )
            i = 2
            while (Path(c.runs_dir) / f"{name}-{i}").exists():
                i += 1
            d = Path(c.runs_dir) / f"{name}-{i}"
        return d

    def setup(self) -> None:
        c = self.cfg
        dev = resolve_device(c.device)
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        self.device = dev
        torch.manual_seed(c.seed)
        if self.dataset is None:
            self.dataset = load_dataset(c.dataset, c.data_dir, c.download, **c.data_args)
        ds = self.dataset
        if ds.size not in SIZES:
            raise ConfigError(
                f"dataset {ds.name!r} has {ds.size} px images; a DCGAN here needs "
                f"{' or '.join(map(str, SIZES))} px"
            )
        self.classes = list(ds.classes)
        self.num_classes = len(self.classes)
        xtr, ytr = ds.train_x, ds.train_y
        if c.train_limit:
            xtr, ytr = xtr[: c.train_limit], ytr[: c.train_limit]
        self.generator = torch.Generator(device=dev).manual_seed(c.seed)
        # mean = std = 0.5 maps uint8 [0, 255] to [-1, 1], the range of the tanh output
        self.loader = ResidentLoader(
            xtr,
            ytr,
            min(c.batch_size, len(xtr)),
            mean=(0.5,),
            std=(0.5,),
            shuffle=True,
            drop_last=True,
            device=dev,
            generator=self.generator,
        )
        self.G, self.D = create_gan(
            c.model, ds.channels, ds.size, self.num_classes, c.z_dim, c.width
        )
        self.G.to(dev)
        self.D.to(dev)
        self.nets = nn.ModuleDict({"G": self.G, "D": self.D})
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=c.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=c.lr, betas=betas)
        # Fixed noise and labels: the same images every epoch, so the grids show progress.
        g = torch.Generator().manual_seed(c.seed + 1)
        if self.G.num_classes:
            k, n = self.num_classes, c.grid
            z = torch.randn(n, c.z_dim, generator=g)
            self.fixed_z = z.repeat(k, 1).to(dev)  # same z across a column: style vs class
            self.fixed_y = torch.arange(k).repeat_interleave(n).to(dev)  # one row per class
            self.grid_cols = n
        else:
            self.fixed_z = torch.randn(c.grid * c.grid, c.z_dim, generator=g).to(dev)
            self.fixed_y = None
            self.grid_cols = c.grid
        self._setup_judge()
        self.run_dir = self._run_dir()
        self.start_epoch = 1
        self.history: list[dict] = []
        if self.resume_from is not None:
            self._resume()

    def _setup_judge(self) -> None:
        c = self.cfg
        self.judge = None
        if not c.judge:
            return
        from cnnlab.analysis.frechet import Judge, feature_stats

        judge = Judge.load(c.judge, device=self.device)
        ds = self.dataset
        if (judge.channels, judge.size) != (ds.channels, ds.size):
            raise ConfigError(
                f"judge {c.judge} takes {judge.channels}×{judge.size}×{judge.size} images but "
                f"{ds.name} has {ds.channels}×{ds.size}×{ds.size}; use a judge trained on it"
            )
        if self.G.num_classes and judge.classes != self.classes:
            raise ConfigError(
                f"judge {c.judge} has classes {judge.classes[:4]}... but {ds.name} has "
                f"{self.classes[:4]}...; class fidelity needs a judge trained on the same classes"
            )
        self.judge = judge
        n = min(c.eval_samples, len(ds.test_x))
        g = torch.Generator().manual_seed(c.seed + 2)
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
        from cnnlab.analysis.frechet import frechet_from_stats

        self.fd_real = frechet_from_stats(*feature_stats(feats_tr), *self.real_stats)
        self.eval_z = torch.randn(n, c.z_dim, generator=g).to(self.device)
        self.eval_y = (torch.arange(n) % self.num_classes).to(self.device)

    # -- checkpoints ---------------------------------------------------------------------

    def meta(self, epoch: int, metrics: dict) -> dict:
        ds = self.dataset
        _, plain = rng_state()
        _, om = optim_split(self.opt_d.state_dict())
        return {
            "cnnlab_version": __version__,
            "kind": "gan",
            "gan": self.G.cnnlab_args,
            "classes": self.classes,
            "dataset": ds.name,
            "input": {"channels": ds.channels, "size": ds.size, "range": [-1, 1]},
            "epoch": epoch,
            "metrics": metrics,
            "config": self.cfg.to_dict(),
            "optimizer_d": om,
            "rng": plain,
        }

    def save(self, epoch: int, metrics: dict) -> Path:
        tensors, _ = rng_state(self.generator)
        ot, _ = optim_split(self.opt_d.state_dict())
        tensors.update({"optimD." + k[len("optim.") :]: v for k, v in ot.items()})
        return save_checkpoint(
            self.run_dir / "checkpoints" / "last.safetensors",
            self.nets,
            self.meta(epoch, metrics),
            self.opt_g,
            tensors,
        )

    def _resume(self) -> None:
        ck = load_checkpoint(self.run_dir / "checkpoints" / "last.safetensors")
        if ck.meta.get("kind") != "gan":
            raise CheckpointError(f"{ck.path}: not a GAN checkpoint (use `cnnlab train --resume`)")
        try:
            self.nets.load_state_dict(ck.model_state)
        except RuntimeError as e:
            raise CheckpointError(
                f"{ck.path}: weights do not fit the model ({str(e).splitlines()[0]})"
            ) from None
        self.opt_g.load_state_dict(ck.optimizer_state())
        dt = {
            "optim." + k[len("optimD.") :]: v for k, v in ck.tensors.items() if k[:7] == "optimD."
        }
        self.opt_d.load_state_dict(optim_join(dt, ck.meta["optimizer_d"]))
        restore_rng(ck.tensors, ck.meta.get("rng", {}), self.generator)
        self.start_epoch = int(ck.meta["epoch"]) + 1
        # Lines written after the checkpoint (a crash between the two) are dropped.
        self.history = [
            m for m in read_metrics(self.run_dir) if m.get("epoch", 0) < self.start_epoch
        ]
        atomic_write_text(
            self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history)
        )

    # -- the loop ------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict:
        c, dev = self.cfg, self.device
        G, D, opt_g, opt_d = self.G, self.D, self.opt_g, self.opt_d
        G.train()
        D.train()
        cond = bool(G.num_classes)
        aux = c.aux_weight if D.aux_classes else 0.0
        sums = torch.zeros(5, device=dev)  # loss_d, loss_g, D(x), D(G(z)), aux acc; one read
        steps = 0
        t0 = time.perf_counter()
        for x, y in self.loader:
            b = x.shape[0]
            z = torch.randn(b, c.z_dim, device=dev, generator=self.generator)
            yc = y if cond else None
            fake = G(z, yc)
            # D step: real → real_label, fake → 0 (fake detached: G is not updated here)
            if aux:  # AC-GAN: D also classifies real and fake images (Odena et al. 2017)
                d_real, c_real = D(x, with_class=True)
                d_fake, c_fake = D(fake.detach(), with_class=True)
                loss_d = _bce(d_real, c.real_label) + _bce(d_fake, 0.0)
                loss_d = loss_d + aux * (F.cross_entropy(c_real, y) + F.cross_entropy(c_fake, y))
                acc = (c_real.detach().argmax(1) == y).float().mean()
            else:
                d_real = D(x, yc)
                d_fake = D(fake.detach(), yc)
                loss_d = _bce(d_real, c.real_label) + _bce(d_fake, 0.0)
                acc = torch.zeros((), device=dev)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # G step, non-saturating: make D call the fakes real (and of their class)
            if aux:
                g_adv, g_cls = D(fake, with_class=True)
                loss_g = _bce(g_adv, 1.0) + aux * F.cross_entropy(g_cls, y)
            else:
                loss_g = _bce(D(fake, yc), 1.0)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums += torch.stack(
                [
                    loss_d.detach(),
                    loss_g.detach(),
                    torch.sigmoid(d_real.detach()).mean(),
                    torch.sigmoid(d_fake.detach()).mean(),
                    acc,
                ]
            )
            steps += 1
        s = (sums / max(steps, 1)).tolist()  # the epoch's one sync
        seconds = time.perf_counter() - t0
        extra = {"d_class_acc": s[4]} if aux else {}  # D's aux accuracy on real images
        return {
            "epoch": epoch,
            "loss_d": s[0],
            "loss_g": s[1],
            "d_real": s[2],
            "d_fake": s[3],
            **extra,
            "steps": steps,
            "seconds": seconds,
            "images_per_s": steps * self.loader.batch_size / max(seconds, 1e-9),
        }

    @torch.no_grad()
    def sample(self, z: torch.Tensor, y: torch.Tensor | None, batch: int = 500) -> torch.Tensor:
        self.G.eval()
        out = [
            self.G(z[i : i + batch], None if y is None else y[i : i + batch])
            for i in range(0, z.shape[0], batch)
        ]
        self.G.train()
        return torch.cat(out)

    def score(self) -> dict:
        from cnnlab.analysis.frechet import feature_stats, frechet_from_stats

        cond = bool(self.G.num_classes)
        fake = self.sample(self.eval_z, self.eval_y if cond else None)
        feats, logits = self.judge.features_and_logits(fake)
        m = {"fd": frechet_from_stats(*feature_stats(feats), *self.real_stats)}
        if cond:
            m["class_fidelity"] = (logits.argmax(1) == self.eval_y).float().mean().item()
        return m

    def save_grid(self, epoch: int) -> Path:
        from torchvision.utils import make_grid

        imgs = self.sample(self.fixed_z, self.fixed_y)
        grid = make_grid(
            imgs.cpu(), nrow=self.grid_cols, padding=2, normalize=True, value_range=(-1, 1)
        )
        path = self.run_dir / "samples" / f"epoch_{epoch:03d}.png"
        atomic_write_bytes(path, grid_png(grid))
        return path

    def plot(self) -> None:
        plot_gan_history(self.run_dir, self.history, getattr(self, "fd_real", None))

    def fit(self) -> GanResult:
        self.setup()
        c = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", c.to_yaml())
        n = len(self.loader.x)
        self.log(
            f"{c.model} (G {sum(p.numel() for p in self.G.parameters()):,} + "
            f"D {sum(p.numel() for p in self.D.parameters()):,} params) on {self.dataset.name} "
            f"[{n:,} images, {len(self.loader)} steps/epoch] — {self.device}"
            + (f"; judge {c.judge}" if self.judge else "")
        )
        if self.judge and self.start_epoch == 1:
            self.log(
                f"feature-space Fréchet distance train-vs-test real images: {self.fd_real:.3f}"
            )
        for epoch in range(self.start_epoch, c.epochs + 1):
            m = self.train_epoch(epoch)
            if self.judge is not None:
                t = time.perf_counter()
                m.update(self.score())
                m["fd_real"] = self.fd_real
                if "class_fidelity" in m:
                    m["judge_acc_real"] = self.judge_acc
                m["eval_seconds"] = time.perf_counter() - t
            self.save_grid(epoch)
            self.history.append(m)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(m) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.save(epoch, m)
            self.plot()
            msg = (
                f"epoch {epoch}/{c.epochs}  loss D {m['loss_d']:.3f} G {m['loss_g']:.3f}  "
                f"D(x) {m['d_real']:.3f} D(G(z)) {m['d_fake']:.3f}"
            )
            if "fd" in m:
                msg += f"  FD {m['fd']:.3f}"
            if "class_fidelity" in m:
                msg += f"  fidelity {m['class_fidelity']:.3f}"
            self.log(msg + f"  {m['seconds']:.0f}s")
        return GanResult(self.run_dir, self.history)


def grid_png(grid: torch.Tensor) -> bytes:
    """A (C, H, W) float grid in [0, 1] → PNG bytes (written atomically by the caller)."""
    from PIL import Image

    arr = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def plot_gan_history(run_dir: Path, history: list[dict], fd_real: float | None = None) -> None:
    """``losses.png`` (both losses, D(x), D(G(z))) and, with a judge, ``fid.png``."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [m["epoch"] for m in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [m["loss_d"] for m in history], "o-", label="D loss")
    a1.plot(ep, [m["loss_g"] for m in history], "o-", label="G loss")
    a1.set_xlabel("epoch")
    a1.legend()
    a2.plot(ep, [m["d_real"] for m in history], "o-", label="D(x)")
    a2.plot(ep, [m["d_fake"] for m in history], "o-", label="D(G(z))")
    a2.set_ylim(0, 1)
    a2.set_xlabel("epoch")
    a2.legend()
    fig.tight_layout()
    atomic_write_bytes(Path(run_dir) / "losses.png", _png_bytes(fig))
    plt.close(fig)
    if "fd" not in history[0]:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ep, [m["fd"] for m in history], "o-", color="C0", label="generated vs real")
    if fd_real is not None:
        ax.axhline(fd_real, ls="--", color="gray", label="real train vs real test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Fréchet distance (judge features)")
    ax.set_yscale("log")
    ax.set_title(
        "Feature-space Fréchet distance (judge's penultimate layer; not Inception FID)", fontsize=8
    )
    if "class_fidelity" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(
            ep, [m["class_fidelity"] for m in history], "s-", color="C2", label="class fidelity"
        )
        if "judge_acc_real" in history[-1]:
            ax2.axhline(
                history[-1]["judge_acc_real"], ls=":", color="C2", label="judge acc. on real"
            )
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("class fidelity")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(Path(run_dir) / "fid.png", _png_bytes(fig))
    plt.close(fig)


def train_gan(
    config: GanConfig | dict | None = None,
    *,
    overrides=None,
    dataset: str | Dataset | None = None,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    **kw,
) -> GanResult:
    """Train a DCGAN; ``resume`` continues a run from its last checkpoint with its config
    (``epochs`` and ``kw``/``overrides`` may change it, e.g. to train longer)."""
    if resume is not None:
        run = Path(resume)
        if not (run / "config.yaml").is_file():
            raise CheckpointError(
                f"cannot resume {str(resume)!r}: not a run directory (no config.yaml)"
            )
        try:
            base = yaml.safe_load((run / "config.yaml").read_text())
        except yaml.YAMLError as e:
            raise CheckpointError(
                f"{run}/config.yaml: invalid YAML ({str(e).splitlines()[0]})"
            ) from None
        if not isinstance(base, dict) or "z_dim" not in base:
            raise CheckpointError(
                f"cannot resume {str(resume)!r}: not a GAN run (use `cnnlab train --resume`)"
            )
        config = base
    if isinstance(dataset, str):
        kw["dataset"], dataset = dataset, None
    elif isinstance(dataset, Dataset):
        kw["dataset"] = dataset.name if dataset.name in DATASETS else None
    cfg = build_gan_config(config, overrides, **kw)
    return GanTrainer(cfg, dataset=dataset, resume=resume, quiet=quiet).fit()


def load_generator(run: str | os.PathLike, device="cpu"):
    """(generator in eval mode, checkpoint meta) of a GAN run or checkpoint file."""
    from cnnlab.runs.load import resolve_checkpoint

    ck = load_checkpoint(resolve_checkpoint(run, "last"))
    if ck.meta.get("kind") != "gan":
        raise CheckpointError(f"{run}: not a GAN run (train one with `cnnlab gan`)")
    a = dict(ck.meta["gan"])
    G, _ = create_gan(a.pop("name"), **a)
    state = {k[2:]: v for k, v in ck.model_state.items() if k.startswith("G.")}
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"{ck.path}: weights do not fit the generator ({str(e).splitlines()[0]})"
        ) from None
    return G.to(device).eval(), ck.meta


def _noise(n: int, z_dim: int, seed: int, truncation: float | None) -> torch.Tensor:
    """N(0, 1) noise; with ``truncation`` t each entry clamped to [-t, t] (fewer outliers:
    more typical, less varied samples — the truncation trick, Brock et al. 2019)."""
    if truncation is not None and truncation <= 0:
        raise ConfigError(f"--truncation must be > 0, got {truncation}")
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    return z if truncation is None else z.clamp(-truncation, truncation)


def score_run(
    run: str | os.PathLike,
    judge: str | os.PathLike,
    n: int = 2000,
    truncation: float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict:
    """Score a GAN run's generator with a judge classifier: feature-space Fréchet distance
    to ``n`` real test images, the real-train-vs-test floor, and (conditional) class fidelity."""
    from cnnlab.analysis.frechet import Judge, feature_stats, frechet_from_stats

    G, meta = load_generator(run)
    c = meta.get("config", {})
    ds = load_dataset(
        c.get("dataset", meta.get("dataset")),
        data_dir or c.get("data_dir"),
        False,
        **c.get("data_args", {}),
    )
    J = Judge.load(judge)
    if (J.channels, J.size) != (ds.channels, ds.size):
        raise ConfigError(
            f"judge {judge} takes {J.channels}×{J.size}×{J.size} images, not {ds.channels}×{ds.size}×{ds.size}"
        )
    n = min(n, len(ds.test_x), len(ds.train_x))
    g = torch.Generator().manual_seed(seed + 2)
    real = ds.test_x[torch.randperm(len(ds.test_x), generator=g)[:n]].float().div(127.5).sub(1)
    tr = ds.train_x[torch.randperm(len(ds.train_x), generator=g)[:n]].float().div(127.5).sub(1)
    rs = feature_stats(J.features_and_logits(real)[0])
    y = (torch.arange(n) % G.num_classes) if G.num_classes else None
    z = _noise(n, G.z_dim, seed, truncation)
    with torch.no_grad():
        fake = torch.cat(
            [G(z[i : i + 500], None if y is None else y[i : i + 500]) for i in range(0, n, 500)]
        )
    f, logits = J.features_and_logits(fake)
    out = {
        "n": n,
        "truncation": truncation,
        "fd": frechet_from_stats(*feature_stats(f), *rs),
        "fd_real": frechet_from_stats(*feature_stats(J.features_and_logits(tr)[0]), *rs),
    }
    if y is not None:
        if J.classes != list(meta.get("classes", [])):
            raise ConfigError(f"judge {judge} was trained on other classes than {run}")
        out["class_fidelity"] = (logits.argmax(1) == y).float().mean().item()
    return out


def generate(
    run: str | os.PathLike,
    n: int = 64,
    cls: str | int | None = None,
    out: str | os.PathLike = "grid.png",
    seed: int = 0,
    nrow: int | None = None,
    truncation: float | None = None,
) -> tuple[Path, str]:
    """Sample ``n`` images from a GAN run into a PNG grid; returns (path, description)."""
    import math

    from torchvision.utils import make_grid

    if n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {n}")
    if nrow is not None and nrow < 1:
        raise ConfigError(f"--nrow must be ≥ 1, got {nrow}")
    if not str(out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file, got {str(out)!r}")
    G, meta = load_generator(run)
    classes = list(meta.get("classes", []))
    y = None
    what = f"{n} samples"
    if cls is not None:
        if not G.num_classes:
            raise ConfigError(
                f"{run} is an unconditional GAN; --class needs a run trained with --conditional"
            )
        key = str(cls).strip()
        if key.lstrip("-").isdigit():
            k = int(key)
            if not 0 <= k < G.num_classes:
                raise ConfigError(
                    f"class index {k} out of range; the model has classes 0..{G.num_classes - 1}"
                )
        else:
            lower = [c.lower() for c in classes]
            if key.lower() not in lower:
                raise ConfigError(choices_msg("class", cls, classes))
            k = lower.index(key.lower())
        y = torch.full((n,), k, dtype=torch.long)
        what = f"{n} samples of class {k} ({classes[k] if k < len(classes) else k})"
        nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    elif G.num_classes:
        y = torch.arange(n) % G.num_classes
        nrow = nrow or G.num_classes
        what = f"{n} samples, column j = class j"
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    z = _noise(n, G.z_dim, seed, truncation)
    with torch.no_grad():
        imgs = torch.cat(
            [G(z[i : i + 500], None if y is None else y[i : i + 500]) for i in range(0, n, 500)]
        )
    grid = make_grid(imgs, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    path = Path(out)
    atomic_write_bytes(path, grid_png(grid))
    return path, what


__all__ = [
    "generate",
    "score_run",
    "GanConfig",
    "GanResult",
    "GanTrainer",
    "build_gan_config",
    "load_generator",
    "train_gan",
]
