"""cnnlab eval"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_analysis_args,
    add_checkpoint_arg,
    add_choice,
    add_command,
    add_run_arg,
    print_json_or,
    table,
)

ORDER = 20


def register(sub) -> None:
    p = add_command(
        sub,
        "eval",
        run,
        "accuracy, balanced accuracy, macro-F1, top-5, per-class precision/recall, "
        "confusion matrix of a run",
    )
    add_run_arg(p)
    add_choice(p, "--split", ["test", "train"])
    add_checkpoint_arg(p, "--checkpoint")
    add_analysis_args(p, dataset="evaluate on another dataset with the same classes")
    add_tta_arg(p)
    p.add_argument(
        "--out-dir",
        help="write eval.json and the confusion matrix here (default: the run directory; "
        "a read-only run is evaluated without writing)",
    )


def per_class_rows(r: dict) -> list[list[str]]:
    """class, precision, recall (= the class's accuracy), F1, test images."""
    return [
        [c, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", f"{m['support']:,}"]
        for c, m in r["per_class_metrics"].items()
    ]


def run(args) -> int:
    from cnnlab.inference import evaluate

    r = evaluate(
        args.run,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        device=args.device,
        which=args.checkpoint,
        tta=getattr(args, "tta", False),
        out_dir=args.out_dir,
    )
    if r.get("not_saved"):
        import sys

        print(f"cnnlab: note: results not saved: {r['not_saved']}", file=sys.stderr)

    def show():
        print(
            f"{r['dataset']} {r['split']} ({r['n']:,} images): accuracy {r['accuracy']:.4f}  "
            f"balanced accuracy {r['balanced_accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
            f"top-5 {r['top5']:.4f}  loss {r['loss']:.4f}  ECE {r['ece']:.4f}"
        )
        table(per_class_rows(r), ["class", "precision", "recall", "F1", "images"])
        if r["outputs"]:
            print("wrote " + ", ".join(r["outputs"]))
        if "tta" in r:
            print_tta(r["tta"])

    print_json_or(args, r, show)
    return 0


def add_tta_arg(p) -> None:
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the softmax over the flips and shifts the run "
        "was trained with (its data.augment); reports the accuracy with and without",
    )


def print_tta(t: dict) -> None:
    """One line: accuracy with and without TTA, the change, the views."""
    from cnnlab.inference import describe_views

    print(
        f"TTA ({describe_views(t['views'])}): accuracy "
        f"{t['accuracy']:.4f} vs {t['accuracy_without_tta']:.4f} without "
        f"({t['accuracy_change'] * 100:+.2f} points), loss {t['loss']:.4f}"
    )
