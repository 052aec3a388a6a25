"""cnnlab bench"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_command,
    add_data_args,
    add_device_arg,
    add_recipe_args,
    add_training_args,
    kwargs_of,
    table,
)

ORDER = 80

HELP = """\
Time to accuracy of what users run: the shipped Fashion-MNIST recipe and `cnnlab train`'s
defaults (the MNIST sample), each as a whole `cnnlab train` process (start-up included),
side by side with two reference loops written in plain PyTorch
(cnnlab.studies.references): `naive` (torchvision dataset + DataLoader, batch 64) and
`resident` (the dataset as one device tensor, batch 256, fused Adam), trained on the same
data until they reach the same accuracy. Prints the time-to-accuracy tables and the
epoch-time ratios, and saves a result JSON (command, commit, machine, device, seeds, load).

--plain runs the older comparison instead: the three loops on the article's plain LeNet-5
for the same number of epochs, interleaved epoch by epoch, then cnnlab's epoch time
against batch size and dataset size, and AlexNet images/s against torchvision's alexnet.
Examples:
  cnnlab bench --data-dir DATA                   # the recipes' own schedules
  cnnlab bench --data-dir DATA --epochs 10 --ref-epochs 8 --seeds 0,1
  cnnlab bench --quick                           # tiny synthetic data: a smoke run
  cnnlab bench --plain --data-dir DATA --epochs 15
  cnnlab bench --plain --device cuda --data-dir DATA     # on a GPU: CUDA-graph trainer
"""


def register(sub) -> None:
    p = add_command(
        sub, "bench", run, "benchmark the trainer against reference PyTorch loops", HELP, raw=True
    )
    p.add_argument("--quick", action="store_true", help="tiny synthetic data: a smoke run")
    p.add_argument(
        "--plain",
        action="store_true",
        help="the plain-LeNet epoch comparison, batch-size/data-size sweep and AlexNet part",
    )
    add_data_args(p, data_dir="folder holding fashion-mnist/ (default: the usual places)")
    add_training_args(
        p, epochs="cnnlab's epochs (default: the recipe's own; --plain: 15 for every loop)"
    )
    p.add_argument(
        "--targets",
        help="what to time: fashion-mnist (the shipped recipe), fashion-mnist-fast (its "
        "one-minute version), mnist-sample (the defaults); default fashion-mnist and "
        "mnist-sample (--quick: fashion-mnist, on tiny synthetic data)",
    )
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument(
        "--ref-epochs",
        type=int,
        default=20,
        help="most epochs a reference loop gets to reach the top accuracy (default 20)",
    )
    add_device_arg(p)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for every loop (0 = cnnlab's default: every available core, 1 when measured busy)",
    )
    add_recipe_args(p, "override cnnlab's config, e.g. --set train.batch_size=256")
    p.add_argument(
        "--loops",
        default="cnnlab,naive,resident",
        help="which loops to run (comma list of cnnlab, naive, resident)",
    )
    p.add_argument(
        "--batch-sizes",
        default="128,256,512,1024,2048,4096",
        help="batch sizes for the epoch-time sweep ('' to skip)",
    )
    p.add_argument(
        "--fractions", default="0.25,0.5,1", help="dataset fractions for the sweep ('' to skip)"
    )
    p.add_argument("--no-alexnet", action="store_true", help="skip the AlexNet throughput part")
    p.add_argument("--alexnet-batch", type=int, help="AlexNet batch (default 256 CUDA, 16 CPU)")
    p.add_argument("--alexnet-steps", type=int, help="timed AlexNet steps (default 20 CUDA, 3 CPU)")
    p.add_argument("--out", help="JSON file to write (default runs/bench/bench-<time>.json)")


def _numbers(text: str, kind, what: str) -> tuple:
    from cnnlab.errors import ConfigError

    try:
        vals = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{what} must be a comma list of numbers, got {text!r}") from None
    if any(v <= 0 for v in vals):
        raise ConfigError(f"--{what} values must be positive, got {text!r}")
    return vals


def _names(text: str, known, what: str) -> tuple[str, ...]:
    from cnnlab.errors import ConfigError

    vals = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in vals if v not in known]
    if bad or not vals:
        raise ConfigError(
            f"unknown {what} {','.join(bad) or text!r}; choose from: {', '.join(known)}"
        )
    return vals


def _out_path(args) -> str:
    from datetime import datetime

    kind = ("quick-" if args.quick else "") + ("plain-" if args.plain else "")
    return args.out or f"runs/bench/{kind}bench-{datetime.now():%Y%m%d-%H%M%S}.json"


# the flags both benchmarks take, under their own names
COMMON = ("data_dir", "device", "threads", "overrides", "quick")


def run(args) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.studies import bench

    loops = _names(args.loops, bench.LOOPS, "loop")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be ≥ 1, got {args.epochs}")
    if not args.plain:
        return run_tta(args, loops)
    return run_plain(args, loops)


def run_plain(args, loops) -> int:
    """``--plain``: the three loops on the plain LeNet-5, the sweeps and AlexNet."""
    from cnnlab.errors import ConfigError
    from cnnlab.studies import bench

    if args.epochs is None:
        args.epochs = 15
    fractions = _numbers(args.fractions, float, "fractions")
    if any(f > 1 for f in fractions):
        raise ConfigError(f"--fractions must lie in (0, 1], got {args.fractions!r}")
    result = bench.run_bench(
        **kwargs_of(args, *COMMON, "epochs", "recipe"),
        batch_sizes=_numbers(args.batch_sizes, int, "batch-sizes"),
        fractions=fractions,
        alexnet=not args.no_alexnet,
        **kwargs_of(args, "alexnet_batch", "alexnet_steps"),
        loops=loops,
    )
    print_loops(result, args.quick)
    if result.get("scaling"):
        print_scaling(result["scaling"])
    if result.get("alexnet"):
        print_alexnet(result["alexnet"])
    path = bench.save(result, _out_path(args))
    print(f"saved {path} ({result['wall_seconds']:.0f} s)")
    return 0


def print_loops(result: dict, quick: bool) -> None:
    """The loops' epoch times and times to accuracy, and their memory."""
    from cnnlab.studies import bench

    rows, header = bench.summary_rows(result)
    title = f"LeNet-5 on Fashion-MNIST{' (quick: synthetic)' if quick else ''}"
    table(rows, header, title=title)
    print(
        "s/ep: median seconds per epoch; × wall/× cpu: the loop's median epoch time / cnnlab's "
        "(wall clock; process CPU time, steadier on a shared machine); t→X%: training seconds "
        "until test acc ≥ X"
    )
    if "resident_memory_ratio" in result:
        print(
            f"cnnlab's resident dataset: {result['resident_memory_ratio']:.3f}× its raw uint8 size"
        )
    for k, r in result["loops"].items():
        print(f"{k}: RSS growth after epoch 1: {r['summary']['rss_growth_mb']:+.1f} MB")
        if r["summary"].get("one_time_seconds"):
            print(f"{k}: one-time CUDA-graph capture {r['summary']['one_time_seconds']:.2f} s "
                  "(not in the epoch times)")  # fmt: skip


def print_scaling(sc: dict) -> None:
    """cnnlab's epoch time against batch size and against dataset size."""

    def secs(r) -> list[str]:
        return [f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.2f}"]

    table(
        [[r["batch_size"], *secs(r), f"{r['images_per_s']:,.0f}"] for r in sc["by_batch_size"]],
        ["batch", "s/epoch", "cpu s/epoch", "images/s"],
        title="cnnlab epoch time against batch size",
    )
    table(
        [[f"{r['fraction']:g}", f"{r['images']:,}", *secs(r)] for r in sc["by_dataset_size"]],
        ["fraction", "images", "s/epoch", "cpu s/epoch"],
        title="cnnlab epoch time against dataset size",
    )


def print_alexnet(ax: dict) -> None:
    """AlexNet's training and inference images/s, against torchvision's alexnet."""
    from cnnlab.studies import bench

    graphs = any("graph_train_images_per_s" in r for r in ax["models"].values())
    rows = []
    for name, r in ax["models"].items():
        if "skipped" in r:
            rows.append([name, "—", "—"] + ["—", "—"] * graphs + [r["skipped"]])
            continue
        row = [name, f"{r['train_images_per_s']:,.1f}", f"{r['infer_images_per_s']:,.1f}"]
        if graphs:
            row += [
                bench.fmt(r.get("graph_train_images_per_s"), "{:,.1f}"),
                bench.fmt(r.get("graph_infer_images_per_s"), "{:,.1f}"),
            ]
        notes = [
            f"{what}train {r[p + 'train_vs_torchvision']:.2f}×, "
            f"infer {r[p + 'infer_vs_torchvision']:.2f}×"
            for p, what in (("", ""), ("graph_", "graph: "))
            if p + "train_vs_torchvision" in r
        ]
        rows.append(row + ["; ".join(notes) + " torchvision" if notes else "reference"])
    header = ["model", "train img/s", "infer img/s"]
    header += ["graph train", "graph infer"] * graphs + ["note"]
    table(
        rows,
        header,
        title=f"AlexNet, synthetic {ax['size']}² batches of {ax['batch']} — {ax['device']}",
    )


def run_tta(args, loops) -> int:
    import shlex
    import sys

    from cnnlab.errors import ConfigError
    from cnnlab.studies import bench

    default = "fashion-mnist" if args.quick else ",".join(bench.TARGETS)
    targets = _names(args.targets or default, bench.TARGETS, "target")
    try:
        seeds = tuple(int(v) for v in args.seeds.split(",") if v.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds must be a comma list of seeds ≥ 0, got {args.seeds!r}")
    if args.ref_epochs < 1:
        raise ConfigError(f"--ref-epochs must be ≥ 1, got {args.ref_epochs}")
    if args.recipe:
        raise ConfigError("--recipe goes with --plain; the time-to-accuracy run times the "
                          "shipped recipes (choose them with --targets)")  # fmt: skip
    result = bench.run_tta(
        targets=targets,
        seeds=seeds,
        loops=loops,
        **kwargs_of(args, *COMMON, "epochs", "ref_epochs"),
    )
    argv = sys.argv[1:]
    if "--out" in argv:  # where the file goes is not part of what was measured
        i = argv.index("--out")
        argv = argv[:i] + argv[i + 2 :]
    shown = [a if a != args.data_dir else "DATA" for a in argv]
    result["command"] = "cnnlab " + " ".join(shlex.quote(a) for a in shown)
    for entry in result["targets"].values():
        rows, header = bench.tta_rows(entry)
        what = f"--recipe {entry['recipe']}" if entry["recipe"] else "defaults"
        table(rows, header, title=f"Time to accuracy, {entry['dataset']}: cnnlab train {what}")
    print(
        "→ X %: wall seconds from launching the process until the first epoch at ≥ X % test "
        "accuracy had been evaluated (start-up, data loading and evaluation included); in "
        "brackets the training seconds alone. s/epoch: median training seconds per epoch."
    )
    rows = [
        [key, loop, f"{r:.2f}×"]
        for key, entry in result["targets"].items()
        for loop, r in entry["epoch_ratios"].items()
    ]
    if rows:
        table(rows, ["target", "reference", "its s/epoch ÷ cnnlab's"], title="Epoch time")
    m = result["machine_info"]
    print(f"load average: {m['load_avg']} at the start, {m['load_avg_end']} at the end")
    path = bench.save(result, _out_path(args))
    print(f"saved {path} ({result['wall_seconds']:.0f} s)")
    return 0
