"""The config's sections and their defaults: one dataclass per section of a recipe
(``model``, ``data``, ``optim``, ``sched``, ``train``, ``run``, ``gan``)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    name: str = "lenet5"
    args: dict = field(default_factory=dict)  # builder options: activation, init, ...
    # fine-tuning: start from a cnnlab run, a checkpoint, a torchvision AlexNet .pth or a
    # .safetensors state dict (the classifier is re-initialised when the classes differ)
    init_from: str | None = None


@dataclass
class DataConfig:
    name: str = "mnist-sample"
    data_dir: str | None = None
    download: bool = True
    augment: str = (
        "auto"  # comma list of crop, flip, noise, erase; 'auto' = dataset default; 'none'
    )
    pad: int = 2  # padding for random crop
    resize: int | None = None  # resize on the device (e.g. 224 for AlexNet)
    grayscale: bool = False  # RGB → gray (the article's optional preprocessing)
    # validation split carved from the training set (stratified, seeded by train.seed): the
    # best checkpoint and early stopping use it; 0 = none (then no best, only last)
    val_fraction: float = 0.1
    train_limit: int | None = None  # use only the first N training images (fixed order)
    # semi-supervised: keep N labelled images per class (chosen by train.seed), the rest of
    # the training set is unlabelled (its labels are dropped)
    labels_per_class: int | None = None
    # how a training epoch draws its images: random (a permutation) or balanced (every
    # class equally often, with replacement; seeded, so a resumed run draws the same)
    sampler: str = "random"
    args: dict = field(default_factory=dict)  # dataset options (synthetic: size, channels, ...)


@dataclass
class OptimConfig:
    name: str = "adam"
    # 1e-2 with batch 256: the defaults' fastest time to accuracy (docs/performance.md)
    lr: float | typing.Literal["auto"] = 1e-2  # auto: chosen by an LR range test (lr-find)
    backbone_lr_mult: float = 1.0  # fine-tuning: the backbone's LR = lr × this
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class SchedConfig:
    name: str = "onecycle"  # constant, step, cosine, onecycle, plateau
    warmup_epochs: float = 0.0
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step/plateau: decay factor
    min_lr: float = 0.0  # cosine: floor
    pct_start: float = 0.25  # onecycle: fraction of steps spent rising
    patience: int = 3  # plateau: epochs without improvement


@dataclass
class TrainConfig:
    epochs: int = 20
    # 256 (with optim.lr 1e-2): 98 % on the MNIST sample in 1.4× less time than 64 / 3e-3
    batch_size: int = 256
    eval_batch_size: int = 1000
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    # per-class loss weights: none (null), auto (inverse class frequency, mean 1 over the training
    # images) or a list of one number > 0 per class
    class_weights: list[float] | str | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    # auto (bf16 on CUDA, fp32 on CPU); fast (bf16 for models of ≥ 1M parameters where it
    # is native: AVX512-BF16/AMX CPUs, CUDA; else fp32); fp32; bf16; fp16
    precision: str = "auto"
    channels_last: str = "auto"  # auto (CUDA: true; CPU: false, measured faster), true, false
    compile: bool = False
    # CUDA graphs: step = the whole step (batch, augmentation, forward, backward, optimiser)
    # in one graph; model = forward/backward only; auto/true = step where it can, else model
    cuda_graph: str = "auto"
    # CPU threads: 0 = every available core (the same on every run of this machine, so the
    # same numbers whatever its load); auto-measure = one thread when a quick measurement
    # finds the cores busy (faster under load, but the numbers then follow the load)
    threads: int | typing.Literal["auto-measure"] = 0
    grad_clip: float = 0.0
    # --resume reuses the numerics a run trained with (threads, precision, layout, library
    # versions) and refuses when they cannot be had here; false: continue anyway, warned
    exact_resume: bool = True
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch every N steps (0 = epochs only)
    nan_policy: str = "stop"  # non-finite loss: stop (free) or skip the step + lower LR (syncs)
    nan_lr_factor: float = 0.5  # skip: LR multiplier applied at each skipped step
    # robust training: none, fgsm, pgd (L∞ attacks in [0, 1] pixel scale; train/adversarial.py)
    adversarial: str = "none"
    eps: float = 0.1  # attack radius in pixel units (0.1 ≈ 25 grey levels)
    adv_steps: int = 7  # PGD steps
    adv_step_size: float = 0.0  # 0 = 2.5·eps/steps (PGD), 1.25·eps (FGSM)
    adv_random_start: bool = True
    steps_per_epoch: int = 0  # labels_per_class runs: steps per epoch (0 = auto)
    early_stop: int = 0  # patience in epochs on val_acc (needs data.val_fraction > 0); 0 = off
    # the best checkpoint: val (the epoch's validation accuracy) or smooth (its mean over the
    # last 3 epochs: a small validation set's single epochs are noise)
    select: str = "val"
    # imagefolder: choose model, input size, batch, LR, epochs and the validation share from
    # the folder for every such key not given (train/auto.py); false = the plain defaults
    auto: bool = True
    diagnostics: bool = True  # gradient flow + activation stats → <run>/gradients.jsonl
    report: bool = False  # write <run>/report.html when training ends (`cnnlab train`: on)
    snapshots: bool = True  # first layers' weights each epoch → <run>/snapshots/ (explore)
    # semi-supervised (with data.labels_per_class): none, pseudo_label, mean_teacher, fixmatch
    semi: str = "none"
    semi_threshold: float = 0.95  # pseudo_label/fixmatch: confidence to keep a pseudo-label
    semi_ratio: int = 7  # unlabelled images per labelled image in a step (FixMatch's mu)
    semi_weight: float = 1.0  # weight of the unlabelled loss
    semi_rampup: float = 0.0  # fraction of training over which the unlabelled weight ramps up
    semi_align: bool = True  # distribution alignment of the pseudo-label targets (ReMixMatch)
    # a moving average of the weights, decay per step (0 = off): the average is evaluated,
    # selected and saved (semi-supervised: the teacher; mean_teacher uses 0.99 when 0)
    ema: float = 0.0
    # evaluate every epoch on the mean of the image's and its mirror image's softmax (needs
    # flip in data.augment: the run then trained on mirror images)
    eval_flip: bool = False
    # what a step computes (train/task.py): auto, classify, adversarial, semi, gan;
    # auto picks it from the config (see resolve_task)
    task: str = "auto"
    freeze: str = "none"  # fine-tuning: none, features (the convs) or body (all but classifier)
    unfreeze_at: int = 0  # the epoch the frozen part starts training (0 = stays frozen)


@dataclass
class RunConfig:
    name: str | None = None
    runs_dir: str = "runs"
    save_best: bool = True
    # experiment trackers: none, or tensorboard and/or mlflow, comma-separated
    report_to: str = "none"


@dataclass
class GanConfig:
    """The GAN task's own settings; data, epochs, batch, seed, device and Adam's lr/betas
    come from the shared sections. The variant (model.name) follows from these two:
    aux_weight > 0 → dcgan-ac, conditional → dcgan-conditional, else dcgan."""

    conditional: bool = False  # class label into G and D (a cGAN)
    aux_weight: float = 0.0  # > 0: AC-GAN (D also classifies; class loss with this weight)
    z_dim: int = 100
    width: int = 64  # generator/discriminator base channels (DCGAN paper: 64+)
    real_label: float = 1.0  # < 1 for one-sided label smoothing (Salimans et al. 2016)
    judge: str | None = None  # a classifier run that scores samples (Fréchet distance, fidelity)
    eval_samples: int = 2000  # real and generated images per score
    grid: int = 8  # fixed-noise grid: grid×grid images (conditional: classes × grid)


# The GAN models (models/gan.py's registry, kept in step by a test): config sits below
# models, so it names them instead of looking them up.
GAN_MODELS = ("dcgan", "dcgan-conditional", "dcgan-ac")
TASKS = ("auto", "classify", "adversarial", "semi", "gan")
