"""cnnlab predict"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_choice,
    add_command,
    add_device_arg,
    add_json_arg,
    add_run_arg,
    print_json_or,
)

ORDER = 30


def register(sub) -> None:
    p = add_command(sub, "predict", run, "classify PNG/JPEG images with a trained run")
    add_run_arg(p)
    p.add_argument(
        "images", nargs="+", help="image files (any size or mode; resized as the model needs)"
    )
    p.add_argument("--top", type=int, default=3, help="how many classes to show, ≥ 1 (default 3)")
    add_choice(
        p,
        "--invert",
        ["auto", "always", "never"],
        "invert dark-on-light images for models trained on light-on-dark data",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the probabilities over the flips and shifts "
        "the run was trained with",
    )
    add_device_arg(p)
    add_json_arg(p)


def run(args) -> int:
    import sys

    from cnnlab.inference import describe_views, predict

    res = predict(
        args.run,
        args.images,
        top=args.top,
        device=args.device,
        invert=args.invert,
        errors="report",
        tta=args.tta,
    )

    def show():
        views = next((r["tta"] for r in res if "tta" in r), None)
        if views:
            print(f"TTA: probabilities averaged over {describe_views(views)}")
        for r in res:
            if "error" in r:
                continue
            others = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"][1:])
            inv = " (inverted)" if r["inverted"] else ""
            inv += " [out of distribution?]" if (r.get("ood") or {}).get("flag") else ""
            print(
                f"{r['image']}: {r['class']} {r['probability']:.3f}{inv}"
                + (f"  [{others}]" if others else "")
            )

    print_json_or(args, res, show)
    bad = [r for r in res if "error" in r]
    for r in bad:  # each unreadable file named; the others were answered
        print(f"cnnlab: error: {r['error']}", file=sys.stderr)
    return 2 if bad else 0
