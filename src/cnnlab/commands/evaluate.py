"""cnnlab eval"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_analysis_args,
    add_checkpoint_arg,
    add_run_arg,
    print_json_or,
    table,
)

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="accuracy, top-5, per-class accuracy, confusion matrix of a run"
    )
    add_run_arg(p)
    p.add_argument("--split", default="test", choices=["test", "train"])
    add_checkpoint_arg(p, "--checkpoint")
    add_analysis_args(p, dataset="evaluate on another dataset with the same classes")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.inference import evaluate

    r = evaluate(
        args.run,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        device=args.device,
        which=args.checkpoint,
    )

    def show():
        print(
            f"{r['dataset']} {r['split']} ({r['n']:,} images): accuracy {r['accuracy']:.4f}  "
            f"top-5 {r['top5']:.4f}  loss {r['loss']:.4f}  ECE {r['ece']:.4f}"
        )
        table([[c, f"{a:.4f}"] for c, a in r["per_class"].items()], ["class", "accuracy"])
        print("wrote " + ", ".join(r["outputs"]))

    print_json_or(args, r, show)
    return 0
