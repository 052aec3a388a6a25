"""cnnlab gan"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_command,
    add_data_args,
    add_device_arg,
    add_output_args,
    add_overrides_arg,
    add_quiet_arg,
    add_resume_arg,
    add_seed_arg,
    add_training_args,
    shortcut_args,
)

ORDER = 70

HELP = """\
Train a DCGAN (or a class-conditional one) with the standard recipe: Adam 2e-4,
beta1 0.5, batch 128, images in [-1, 1]. Writes a run directory: config.yaml,
metrics.jsonl (G/D losses, D(x), D(G(z)) per epoch), checkpoints/last.safetensors,
samples/epoch_XXX.png (fixed noise; one row per class when conditional), losses.png.
With --judge RUN (a classifier run trained on the same data) it also logs, per epoch,
a Fréchet distance in the judge's penultimate feature space (NOT the Inception FID)
and, for the conditional model, the share of samples the judge puts in their intended
class; both are plotted in fid.png.
Examples:
  cnnlab gan --dataset fashion-mnist --data-dir DATA --conditional --epochs 10 \\
      --judge runs/lenet5-fashion-mnist
  cnnlab gan --resume runs/dcgan-conditional-fashion-mnist-20261126-160000 --epochs 20
  cnnlab gan --dataset fashion-mnist --conditional --set aux_weight=1   # AC-GAN
  cnnlab gan --dataset synthetic --epochs 1 --set train_limit=256 --set width=16
Settings: `cnnlab gan` loads the shipped recipe dcgan (recipes/dcgan.yaml), then
--set, then its flags. Keys are section.key (gan.width, train.threads, data.num_train);
the GAN's bare keys are still accepted: dataset, data_dir, download, train_limit,
conditional, aux_weight (> 0: AC-GAN), z_dim, width, real_label, judge, eval_samples,
grid, epochs, batch_size, seed, device, threads, lr, beta1, beta2, name, runs_dir.
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "gan",
        run,
        "train a (conditional) DCGAN, with sample grids and judge scores",
        HELP,
        raw=True,
    )
    add_data_args(
        p,
        dataset="28 or 32 px dataset (see `cnnlab data`); default fashion-mnist",
        data_dir="folder holding the dataset files",
    )
    p.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="class-conditional generator and discriminator (dcgan-conditional)",
    )
    add_training_args(
        p,
        epochs="number of epochs (default 10)",
        batch_size="batch size (default 128)",
        lr="Adam learning rate for G and D (default 2e-4)",
    )
    p.add_argument("--judge", metavar="RUN", help="classifier run that scores the samples")
    add_device_arg(p, default=None)
    add_seed_arg(p, "random seed")
    add_output_args(p, report_to=True)
    add_resume_arg(p, "continue a GAN run from its last checkpoint")
    add_overrides_arg(p, "any config key, e.g. --set gan.width=32 --set train.threads=1")
    add_quiet_arg(p)


# The keys `cnnlab gan --set` took before the one config system, and their sections.
BARE_KEYS = {
    "dataset": "data.name",
    **{k: f"data.{k}" for k in ("data_dir", "download", "train_limit")},
    **{
        k: f"gan.{k}"
        for k in (
            "conditional",
            "aux_weight",
            "z_dim",
            "width",
            "real_label",
            "judge",
            "eval_samples",
            "grid",
        )
    },
    **{k: f"train.{k}" for k in ("epochs", "batch_size", "seed", "device", "threads")},
    **{k: f"optim.{k}" for k in ("lr", "beta1", "beta2")},
    **{k: f"run.{k}" for k in ("name", "runs_dir")},
}


def sectioned(override: str) -> str:
    """``width=16`` → ``gan.width=16``; ``section.key=value`` stays as it is."""
    key, eq, value = override.partition("=")
    k = key.strip()
    return f"{BARE_KEYS[k]}={value}" if eq and k in BARE_KEYS else override


def require_gan_run(run: str) -> None:
    from pathlib import Path

    from cnnlab.errors import CheckpointError
    from cnnlab.runs.layout import run_kind

    if not (Path(run) / "config.yaml").is_file():
        return  # fit() says what is wrong with it
    if run_kind(run) != "gan":
        raise CheckpointError(f"cannot resume {run!r}: not a GAN run (use `cnnlab train --resume`)")


def run(args) -> int:
    import json

    from cnnlab.train.api import fit

    overrides = [sectioned(o) for o in args.overrides]
    if args.judge is not None:
        overrides.append(f"gan.judge={json.dumps(args.judge)}")  # quoted: any path as is
    if args.conditional:
        overrides.append("gan.conditional=true")
    if args.resume:
        require_gan_run(args.resume)
    res = fit(
        recipe=None if args.resume else "dcgan",
        overrides=overrides,
        resume=args.resume,
        quiet=args.quiet,
        **shortcut_args(args),
    )
    if res.interrupted:
        return 0  # the trainer said how to resume
    if not res.history:
        print(f"nothing to do: {res.run_dir} already finished its epochs (raise --epochs)")
        return 0
    f = res.final
    line = f"after {f['epoch']} epochs: D(x) {f['d_real']:.3f}, D(G(z)) {f['d_fake']:.3f}"
    if "fd" in f:
        line += f", feature-space Fréchet distance {f['fd']:.3f} (real-vs-real {f['fd_real']:.3f})"
    if "class_fidelity" in f:
        line += f", class fidelity {f['class_fidelity']:.3f}"
    print(line)
    print(f"run directory: {res.run_dir}")
    return 0
