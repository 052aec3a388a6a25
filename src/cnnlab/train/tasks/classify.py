"""Classification: cross-entropy (or another loss by name) on labelled images, and its
adversarial-training form (each batch replaced by its attack).

Small datasets live on the device (ResidentLoader): one batch is an index slice, the
augmentation runs batched on the device, and per-step metrics stay in device tensors.
On CUDA the whole step (batch, augmentation, forward, backward, optimiser) can run from
one CUDA graph (:mod:`cnnlab.train.whole_step`); otherwise the model's forward/backward
alone can be graphed, or the step compiled.
"""

from __future__ import annotations

import itertools

import torch

from cnnlab.data.augment import parse_augment
from cnnlab.data.loader import ResidentLoader
from cnnlab.data.split import split_train_val
from cnnlab.errors import ConfigError
from cnnlab.models import count_params
from cnnlab.runtime.device import pool_before_activation, settle_precision
from cnnlab.runtime.graphs import GraphedForward
from cnnlab.train import finetune, whole_step
from cnnlab.train.adversarial import make_adversary
from cnnlab.train.ema import WeightAverage, weight_average
from cnnlab.train.input_size import model_for_input
from cnnlab.train.losses import build_loss, class_counts, class_weights
from cnnlab.train.optim import build_optimizer
from cnnlab.train.task import Task


def n_images(loader) -> int:
    return len(loader.x) if hasattr(loader, "x") else loader.num_samples


class ClassifyTask(Task):
    kind = "classify"
    monitor = "val_acc"
    # a weight average's state (the student) exists only with train.ema
    resume_keys = (*Task.resume_keys, ("train", ("ema",)))

    def __init__(self) -> None:
        self.whole: whole_step.WholeStep | None = None  # the whole-step graph, when it runs
        self.capture_seconds = 0.0  # its one-time capture (not in any epoch's time)
        self._forwards: dict[int, GraphedForward] = {}  # evaluation's, per model
        self.adversary = None
        self.ema: WeightAverage | None = None  # the weights' moving average (train.ema)

    # -- set-up -------------------------------------------------------------------------

    def build(self, ctx) -> None:
        self.ctx = ctx
        self.cfg, self.rt, self.dist = ctx.cfg, ctx.rt, ctx.dist
        self.generator = ctx.generator
        ds = ctx.dataset
        if getattr(ds, "streaming", False):  # files streamed by workers (imagefolder)
            ds.attach_loaders(self)
        else:
            self._resident_loaders()
        ctx.generator = self.generator  # a streaming set draws its order on the CPU
        self.class_counts = self._class_counts()
        self._build_model()
        # the weights' average (train.ema) is evaluated and saved; the student is state
        self.ema = weight_average(self.model, self.ema_decay_setting(), self.ema_warmup)

    def select_train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images to train on, after train_limit and the validation split (the
        semi-supervised task keeps the labelled ones here)."""
        return x, y

    def _resident_loaders(self) -> None:
        cfg, t, dev = self.cfg, self.cfg.train, self.rt.device
        ds = self.ctx.dataset
        xtr, ytr = ds.train_x, ds.train_y
        if cfg.data.train_limit:
            xtr, ytr = xtr[: cfg.data.train_limit], ytr[: cfg.data.train_limit]
        self.val = None
        xva = None
        if getattr(ds, "val_x", None) is not None:  # a folder's own val/ split
            xva, yva = ds.val_x, ds.val_y
        elif cfg.data.val_fraction > 0:
            tr_idx, va_idx = split_train_val(len(xtr), cfg.data.val_fraction, t.seed, ytr)
            xva, yva = xtr[va_idx], ytr[va_idx]
            xtr, ytr = xtr[tr_idx], ytr[tr_idx]
            if not len(va_idx):  # too few images for a validation split: none
                xva = None
        xtr, ytr = self.select_train(xtr, ytr)
        if len(xtr) < 1:
            raise ConfigError("no training images left after train_limit/val_fraction")
        self.augment = parse_augment(cfg.data.augment, ds.augment)
        if t.eval_flip and "flip" not in self.augment:
            raise ConfigError(
                "train.eval_flip averages each image with its mirror image, but this run does "
                f"not train on mirror images (data.augment: {','.join(self.augment) or 'none'}); "
                "add flip to data.augment, or leave eval_flip off (digits and text change "
                "meaning when mirrored)"
            )
        common = dict(
            mean=ds.mean,
            std=ds.std,
            resize=cfg.data.resize,
            grayscale=cfg.data.grayscale,
            device=dev,
            channels_last=self.rt.channels_last,
        )
        bs = min(t.batch_size, len(xtr))
        self.train_loader = ResidentLoader(
            xtr,
            ytr,
            bs,
            shuffle=True,
            drop_last=True,
            augment=self.augment,
            pad=cfg.data.pad,
            generator=self.generator,
            balanced=cfg.data.sampler == "balanced",
            **common,
        )
        if self.dist.enabled:
            try:
                self.train_loader.shard(self.dist.rank, self.dist.world)
            except ValueError:
                raise ConfigError(
                    f"train.batch_size {bs} (the global batch) must be divisible by the "
                    f"{self.dist.world} ranks"
                ) from None
        r, w = self.dist.rank, self.dist.world  # evaluation: each rank scores a 1/w share
        self.test_loader = ResidentLoader(
            ds.test_x[r::w], ds.test_y[r::w], t.eval_batch_size, **common
        )
        if xva is not None:
            self.val = ResidentLoader(xva[r::w], yva[r::w], t.eval_batch_size, **common)

    def _class_counts(self) -> torch.Tensor | None:
        """Training images per class (after train_limit, the validation split and the
        task's selection), or None when the loader does not expose its labels."""
        ld = self.train_loader
        y = getattr(ld, "y", None)
        if y is None:  # a streaming loader: its dataset's labels
            y = getattr(getattr(ld, "dataset", None), "targets", None)
        if y is None:
            return None
        return class_counts(y, self.ctx.dataset.num_classes)

    def class_line(self) -> str | None:
        """One line of the training images per class and the imbalance ratio (largest over
        smallest class), for the start of a run; every class up to 12, else the extremes."""
        counts = getattr(self, "class_counts", None)
        if counts is None:
            return None
        names = list(self.ctx.dataset.classes)
        c = counts.tolist()
        lo, hi = min(c), max(c)
        ratio = f"{hi / lo:.1f}×" if lo else "∞ (a class has no images)"
        if len(c) <= 12:
            body = " · ".join(f"{n} {v:,}" for n, v in zip(names, c, strict=True))
        else:
            body = (
                f"min {lo:,} ({names[c.index(lo)]}), median {sorted(c)[len(c) // 2]:,}, "
                f"max {hi:,} ({names[c.index(hi)]})"
            )
        extra = []
        if self.cfg.data.sampler == "balanced":
            extra.append("sampler balanced")
        if getattr(self, "class_weight", None) is not None:
            given = isinstance(self.cfg.train.class_weights, (list, tuple))
            extra.append("class weights " + ("as given" if given else "auto"))
        tail = f"; {', '.join(extra)}" if extra else ""
        return f"train images per class: {body} — imbalance {ratio}{tail}"

    def _build_model(self) -> None:
        cfg, t, dev = self.cfg, self.cfg.train, self.rt.device
        ds = self.ctx.dataset
        in_ch = 1 if cfg.data.grayscale else ds.channels
        size = cfg.data.resize or ds.size
        self.model = model_for_input(
            cfg.model.name,
            in_ch,
            ds.num_classes,
            size,
            cfg.model.args,
            hint="--set data.resize={n}",
        )
        self.model_args = self.model.cnnlab_args
        finetune.prepare(self.ctx, self.model)  # model.init_from, train.freeze
        pool_before_activation(self.model)  # exact; the activation then sees 4× fewer values
        settle_precision(self.rt, t, self.model)
        self.model.to(dev)
        if self.rt.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(
            self.model, cfg.optim, dev, finetune.param_groups(self.model, cfg)
        )
        w = None
        if self.class_counts is not None:
            w = class_weights(t.class_weights, self.class_counts)
        elif str(t.class_weights).strip().lower() not in ("none", "null"):
            raise ConfigError(
                "train.class_weights needs the training labels, which this dataset's "
                "loader does not expose"
            )
        self.class_weight = w  # per-class loss weights (train.class_weights), or None
        self.loss_fn = build_loss(
            t.loss, ds.num_classes, t.label_smoothing, None if w is None else w.to(dev)
        )
        # DDP: the step runs the wrapped model (gradient all-reduce in backward) while
        # self.model stays the plain module for checkpoints and evaluation.
        raw = self.model
        self.train_model = self.model = self.dist.wrap(raw)
        try:
            self.step_fn = self.make_step()
        finally:
            self.model = raw

    def make_step(self):
        model, opt, loss_fn, rt = self.model, self.optimizer, self.loss_fn, self.rt
        step_optimizer = self.ctx.step_optimizer
        adversary = self.adversary
        # the whole step in one CUDA graph where it can be; on CPU cuda_graph=step runs
        # the same device-state step eagerly
        mode = self.cfg.train.cuda_graph.lower()
        if (rt.cuda_graph and mode in ("auto", "true", "step")) or mode == "step":
            why = whole_step.unsupported_reason(self)
            if why is None:
                self.whole = whole_step.WholeStep(self)
            elif mode == "step":
                self.ctx.warn(f"warning: whole-step CUDA graph off ({why})")

        fwd = model
        # graphs are captured for plain inputs of one module: not for attacked batches
        # (input gradients) nor through DDP's hooks
        if rt.cuda_graph and self.whole is None and adversary is None and not self.dist.enabled:
            fwd = self._graph_model()

        def step(x, y):
            if adversary is not None:
                x = adversary(model, x, y)
            with rt.autocast():
                out = fwd(x)
                loss = loss_fn(out, y)
            step_optimizer(loss, opt, model.parameters())
            return loss.detach(), (out.detach().argmax(1) == y).sum()

        if rt.compile:
            # on CUDA "reduce-overhead" replays CUDA graphs; on CPU plain inductor
            return torch.compile(step, mode="reduce-overhead" if rt.device.type == "cuda" else None)
        return step

    def _graph_model(self):
        """The model's forward and backward captured once in CUDA graphs and replayed every
        step (training batches all have one shape: drop_last). The loss, the optimiser and
        the schedule stay eager. Falls back to eager, with a warning, when capture fails."""
        model, rt, tl = self.model, self.rt, self.train_loader
        x = tl.prepare(tl.x[: tl.batch_size], train=False)  # a sample; no RNG consumed
        try:
            with rt.autocast():
                return torch.cuda.make_graphed_callables(
                    model, (x.detach().requires_grad_(False),), num_warmup_iters=3
                )
        except Exception as e:  # capture is an optimisation, never a reason to fail
            self.ctx.warn(f"warning: CUDA graph capture failed ({e}); training eagerly")
            rt.cuda_graph = False
            model.zero_grad(set_to_none=True)
            return model

    # -- the Task interface ---------------------------------------------------------------

    def modules(self):
        return {"model": self.eval_model()}

    def optimizers(self):
        return [self.optimizer]

    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def begin_epoch(self, epoch: int) -> None:
        ld = self.train_loader
        if hasattr(ld, "set_epoch"):  # a streaming loader's DistributedSampler
            ld.set_epoch(epoch)
        if self.whole is not None:
            self._capture_whole()  # once, before the order is drawn (it restores the RNG)
        self.order = ld.order() if hasattr(ld, "order") else None
        self._started = False

    def _capture_whole(self) -> None:
        """Capture the whole-step graph once (CUDA only); on failure, step eagerly."""
        ws = self.whole
        if ws.graph is not None or not self.rt.cuda_graph:
            return
        try:
            ws.capture()
            if self.generator is not None:  # resumable epochs read its state: must still work
                self.generator.set_state(self.generator.get_state())
            self.capture_seconds = ws.capture_seconds
        except Exception as e:
            ws.graph = None  # an optimisation, never a reason to fail: run it eagerly
            self.ctx.warn(f"warning: whole-step CUDA graph capture failed ({e}); stepping eagerly")
            self.rt.cuda_graph = False

    def batches(self, start: int):
        ld = self.train_loader
        if hasattr(ld, "iterate"):
            return ld.iterate(start, self.order)
        # a streaming loader: replay its epoch and skip the batches already done
        return itertools.islice(iter(ld), start, None)

    def step(self, i: int):
        if not self._started:  # the epoch's first step here: fresh, or after a resume
            self._started = True
            if self.whole is not None:
                self.whole.start_epoch(self.order, i)
            else:
                self._batches = iter(self.batches(i))
        if self.whole is not None:
            loss, corr = self.whole()
            n = self.whole.bs
        else:
            x, y = next(self._batches)
            loss, corr = self.step_fn(x, y)
            n = len(y)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss, n, {"correct": corr}

    def epoch_metrics(self, sums: dict[str, float], steps: int) -> dict:
        n = max(sums["n"], 1.0)
        return {"train_loss": sums["loss_sum"] / n, "train_acc": sums["correct"] / n}

    def evaluate(self, epoch: int) -> dict:
        m = {}
        if self.val is not None:
            m["val_loss"], m["val_acc"] = self.ctx.reduce_eval(*self.eval_loader(self.val))
        m["test_loss"], m["test_acc"] = self.ctx.reduce_eval(*self.eval_loader(self.test_loader))
        return m

    # -- the weights' moving average (train.ema; cnnlab.train.ema) -------------------------

    #: the average's decay ramps up over its first updates (``ema.warmup_decay``), so that
    #: a short run's average does not hold on to the random initialisation
    ema_warmup = True

    def ema_decay_setting(self) -> float:
        """The average's decay per step; 0: no average."""
        return self.cfg.train.ema

    def eval_model(self) -> torch.nn.Module:
        """The model that is evaluated and saved: the weights' average where one is kept."""
        return self.ema.model if self.ema is not None else self.model

    def state(self):
        # the trained weights (the student) behind the average, for an exact resume
        return self.ema.state(self.model) if self.ema is not None else ({}, {})

    def load_state(self, tensors, meta) -> None:
        if self.ema is not None:
            self.ema.load_state(self.model, tensors, meta)

    @torch.inference_mode()
    def eval_loader(self, loader) -> tuple[float, float, int]:
        """(mean loss, accuracy, images) of the evaluated model on ``loader``."""
        model = self.eval_model()
        model.eval()
        dev = self.rt.device
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        n = 0
        fwd = self.forward_for(model)
        flip = self.cfg.train.eval_flip
        for x, y in loader:
            out = fwd(x).float()
            if flip:  # the mean softmax of the image and its mirror image, as log-probabilities
                out = ((out.softmax(1) + fwd(x.flip(-1)).float().softmax(1)) / 2).log()
                loss_sum += torch.nn.functional.nll_loss(out, y, reduction="sum")
            else:
                loss_sum += torch.nn.functional.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            n += len(y)
        model.train()
        return loss_sum.item() / max(n, 1), correct.item() / max(n, 1), n

    def forward_for(self, model: torch.nn.Module) -> GraphedForward:
        """Evaluation's forward (no grad): replayed from CUDA graphs where the task graphs
        its steps, eager elsewhere; one per model."""
        if id(model) not in self._forwards:
            graphs = self.rt.cuda_graph or self.whole is not None
            self._forwards[id(model)] = GraphedForward(model, self.rt.autocast, enabled=graphs)
        return self._forwards[id(model)]

    def meta(self) -> dict:
        ds, cfg = self.ctx.dataset, self.cfg
        return {
            "model": self.model_args,
            "classes": ds.classes,
            "dataset": ds.name,
            **self._imbalance_meta(),
            "input": {
                "channels": 1 if cfg.data.grayscale else ds.channels,
                "size": cfg.data.resize or ds.size,
                "mean": self.train_loader.mean.flatten().tolist(),
                "std": self.train_loader.std.flatten().tolist(),
                "grayscale": cfg.data.grayscale,
            },
            # what training augmented with ('auto' resolved): test-time augmentation's views
            "augment": list(getattr(self, "augment", None) or getattr(self.ctx, "augment", ())),
            # the views the run's own accuracy was measured on (train.eval_flip)
            "eval_views": ["original", "flip"] if self.cfg.train.eval_flip else ["original"],
        }

    def _imbalance_meta(self) -> dict:
        """The training images per class (and the loss weights, when used), as recorded in
        every checkpoint (the report reads them)."""
        counts = getattr(self, "class_counts", None)
        if counts is None:
            return {}
        names = self.ctx.dataset.classes
        out = {"class_counts": dict(zip(names, counts.tolist(), strict=True))}
        w = getattr(self, "class_weight", None)
        if w is not None:
            out["class_weights"] = [round(float(v), 6) for v in w]
        return out

    def describe(self) -> str:
        ds = self.ctx.dataset
        return (
            (
                f"{self.cfg.model.name} ({count_params(self.model):,} params) on {ds.name} "
                f"[{n_images(self.train_loader):,} train / "
                + (
                    f"{n_images(self.val):,} val / "
                    if getattr(self, "val", None) is not None
                    else ""
                )
                + f"{n_images(self.test_loader):,} test]"
            )
            + (" (whole step)" if self.rt.cuda_graph and self.whole is not None else "")
            + "".join(self._eval_notes())
        )

    def _eval_notes(self) -> list[str]:
        t = self.cfg.train
        notes = []
        if self.ema is not None:
            notes.append(self.ema.note())
        if t.eval_flip:
            notes.append(", scored on each image and its mirror image")
        return notes


class AdversarialTask(ClassifyTask):
    """Adversarial training (``train.adversarial``): each batch is replaced by its attack
    (FGSM or PGD in [0, 1] pixel space) before the step."""

    kind = "classify"  # the run is a classifier like any other

    def _build_model(self) -> None:
        ld = self.train_loader
        self.adversary = make_adversary(
            self.cfg.train, ld.mean, ld.std, self.generator, self.rt.autocast
        )
        super()._build_model()
