"""cnnlab bench"""

from __future__ import annotations

from cnnlab.commands._common import add_data_args, add_device_arg, add_recipe_args, table

ORDER = 80

HELP = """\
Benchmark cnnlab's trainer against two reference loops written in plain PyTorch
(cnnlab.studies.references): `naive` (torchvision dataset + DataLoader, batch 64) and
`resident` (the dataset as one device tensor, batch 256, fused Adam). All three train the
article's LeNet-5 on Fashion-MNIST for the same number of epochs, interleaved epoch by
epoch; then cnnlab's epoch time against batch size and dataset size, and AlexNet
images/s against torchvision's alexnet. Prints a table and saves JSON.
Examples:
  cnnlab bench --quick                      # tiny synthetic data, seconds
  cnnlab bench --data-dir DATA --threads 2      # 15 epochs by default
  cnnlab bench --device cuda --data-dir DATA     # on a GPU: CUDA-graph trainer
  cnnlab bench --data-dir DATA --set train.batch_size=256 --no-alexnet
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser(
        "bench",
        help="benchmark the trainer against reference PyTorch loops",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny synthetic data: a smoke run")
    add_data_args(p, data_dir="folder holding fashion-mnist/ (default: the usual places)")
    p.add_argument(
        "--epochs",
        type=int,
        default=15,
        help="epochs per loop (default 15: enough for the time-to-90%% column to mean something)",
    )
    add_device_arg(p)
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads for every loop (0 = torch default)"
    )
    add_recipe_args(p, "override cnnlab's config, e.g. --set train.batch_size=256")
    p.add_argument(
        "--loops",
        default="naive,resident,cnnlab",
        help="which Fashion-MNIST loops to run (comma list of naive, resident, cnnlab)",
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
    p.set_defaults(func=run)


def _numbers(text: str, kind, what: str) -> tuple:
    from cnnlab.errors import ConfigError

    try:
        vals = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--{what} must be a comma list of numbers, got {text!r}") from None
    if any(v <= 0 for v in vals):
        raise ConfigError(f"--{what} values must be positive, got {text!r}")
    return vals


def run(args) -> int:
    from datetime import datetime

    from cnnlab.errors import ConfigError
    from cnnlab.studies import bench

    loops = tuple(v.strip() for v in args.loops.split(",") if v.strip())
    bad = [v for v in loops if v not in bench.LOOPS]
    if bad or not loops:
        raise ConfigError(
            f"unknown loop {','.join(bad) or args.loops!r}; choose from: {', '.join(bench.LOOPS)}"
        )
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be ≥ 1, got {args.epochs}")
    fractions = _numbers(args.fractions, float, "fractions")
    if any(f > 1 for f in fractions):
        raise ConfigError(f"--fractions must lie in (0, 1], got {args.fractions!r}")
    result = bench.run_bench(
        data_dir=args.data_dir,
        epochs=args.epochs,
        device=args.device,
        threads=args.threads,
        overrides=args.overrides,
        recipe=args.recipe,
        quick=args.quick,
        batch_sizes=_numbers(args.batch_sizes, int, "batch-sizes"),
        fractions=fractions,
        alexnet=not args.no_alexnet,
        alexnet_batch=args.alexnet_batch,
        alexnet_steps=args.alexnet_steps,
        loops=loops,
    )
    rows, header = bench.summary_rows(result)
    title = f"LeNet-5 on Fashion-MNIST{' (quick: synthetic)' if args.quick else ''}"
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
    sc = result.get("scaling")
    if sc:
        table(
            [
                [
                    r["batch_size"],
                    f"{r['seconds']:.2f}",
                    f"{r['cpu_seconds']:.2f}",
                    f"{r['images_per_s']:,.0f}",
                ]
                for r in sc["by_batch_size"]
            ],
            ["batch", "s/epoch", "cpu s/epoch", "images/s"],
            title="cnnlab epoch time against batch size",
        )
        table(
            [
                [
                    f"{r['fraction']:g}",
                    f"{r['images']:,}",
                    f"{r['seconds']:.2f}",
                    f"{r['cpu_seconds']:.2f}",
                ]
                for r in sc["by_dataset_size"]
            ],
            ["fraction", "images", "s/epoch", "cpu s/epoch"],
            title="cnnlab epoch time against dataset size",
        )
    ax = result.get("alexnet")
    if ax:
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
    out = (
        args.out
        or f"runs/bench/{'quick-' if args.quick else ''}bench-{datetime.now():%Y%m%d-%H%M%S}.json"
    )
    path = bench.save(result, out)
    print(f"saved {path} ({result['wall_seconds']:.0f} s)")
    return 0
