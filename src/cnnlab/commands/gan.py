"""cnnlab gan"""

from __future__ import annotations

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
  cnnlab gan --dataset fashion-mnist --data-dir ../shared/data --conditional --epochs 10 \\
      --judge runs/lenet5-fashion-mnist
  cnnlab gan --resume runs/dcgan-conditional-fashion-mnist-20261126-160000 --epochs 20
  cnnlab gan --dataset fashion-mnist --conditional --set aux_weight=1   # AC-GAN
  cnnlab gan --dataset synthetic --epochs 1 --set train_limit=256 --set width=16
GAN keys for --set (a section prefix like train.threads is accepted): dataset, data_dir,
train_limit, conditional, aux_weight (> 0: AC-GAN), z_dim, width, epochs, batch_size, lr, beta1, beta2, real_label,
seed, device, threads, judge, eval_samples, grid, name, runs_dir.
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "gan",
        help="train a (conditional) DCGAN, with sample grids and judge scores",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset", help="28 or 32 px dataset (see `cnnlab data`); default fashion-mnist"
    )
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="class-conditional generator and discriminator (dcgan-conditional)",
    )
    p.add_argument("--epochs", type=int, help="number of epochs (default 10)")
    p.add_argument("--batch-size", type=int, help="batch size (default 128)")
    p.add_argument("--lr", type=float, help="Adam learning rate for G and D (default 2e-4)")
    p.add_argument("--judge", metavar="RUN", help="classifier run that scores the samples")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--name", help="run name (default: <model>-<dataset>-<time>)")
    p.add_argument("--runs-dir", help="where run directories go (default ./runs)")
    p.add_argument("--resume", metavar="RUN", help="continue a GAN run from its last checkpoint")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any GAN key, e.g. --set width=32 --set train.threads=1",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final result")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.train.gan import train_gan

    res = train_gan(
        overrides=args.overrides,
        resume=args.resume,
        quiet=args.quiet,
        dataset=args.dataset,
        data_dir=args.data_dir,
        conditional=args.conditional,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        judge=args.judge,
        device=args.device,
        seed=args.seed,
        name=args.name,
        runs_dir=args.runs_dir,
    )
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
