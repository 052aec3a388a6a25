"""cnnlab explain"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_analysis_args,
    add_command,
    add_listing_arg,
    add_names_arg,
    add_run_arg,
    kwargs_of,
    print_json_or,
    table,
)

ORDER = 44


def register(sub) -> None:
    p = add_command(
        sub,
        "explain",
        run,
        "attribution maps (saliency, IG, Grad-CAM, occlusion, guided backprop), "
        "filters, feature maps",
        "Captum attribution maps for N test images (random, first, the most confidently "
        "wrong, or chosen indices), first-layer filters, feature maps of every conv layer "
        "and attention maps, as PNGs in <run>/explain/ and one self-contained "
        "<run>/explain.html.",
    )
    add_run_arg(p)
    p.add_argument("-n", type=int, default=16, help="number of test images (default 16)")
    add_listing_arg(
        p,
        "--select",
        default="random",
        help="%(names)s (default random)",
        names="cnnlab.analysis.explain:SELECTIONS",
    )
    p.add_argument("--indices", help="comma list of test-set indices (overrides --select)")
    add_names_arg(p, "--methods", "cnnlab.analysis.explain:METHODS", "(default: all)")
    p.add_argument("--image", type=int, help="test index for the feature/attention maps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ig-steps", type=int, default=50, help="integrated-gradients steps")
    p.add_argument(
        "--internal-batch-size",
        type=int,
        default=128,
        help="integrated-gradients images per forward pass (memory bound)",
    )
    p.add_argument(
        "--perturbations-per-eval",
        type=int,
        default=64,
        help="occlusion patches per forward pass (memory bound)",
    )
    add_analysis_args(p)


def run(args) -> int:
    from cnnlab.analysis.explain import SHORT, explain
    from cnnlab.errors import CnnlabError

    indices = None
    if args.indices:
        try:
            indices = [int(s) for s in args.indices.split(",") if s.strip()]
        except ValueError:
            raise CnnlabError(
                f"--indices needs comma-separated integers, got {args.indices!r}"
            ) from None
    for flag, v in (
        ("--internal-batch-size", args.internal_batch_size),
        ("--perturbations-per-eval", args.perturbations_per_eval),
    ):
        if v < 1:
            raise CnnlabError(f"{flag} must be ≥ 1, got {v}")
    r = explain(
        args.run,
        indices=indices,
        **kwargs_of(args, "n", "select", "methods", "seed", "image", "device", "data_dir"),
        **kwargs_of(args, "ig_steps", "internal_batch_size", "perturbations_per_eval"),
    )

    def show():
        print(
            f"{len(r['indices'])} {r['dataset']} test images ({r['select']}), "
            f"{sum(p == t for p, t in zip(r['pred'], r['true'], strict=True))} correctly classified"
        )
        on = r["on_object_fraction"]
        table(
            [
                [SHORT[m], f"{r['method_seconds'][m]:.2f}", *([f"{on[m]:.2f}"] if on else [])]
                for m in r["methods"]
            ],
            ["method", "seconds", *(["attribution on object"] if on else [])],
        )
        if r["object_area"] is not None:
            print(f"object area (mean share of the image): {r['object_area']:.2f}")
        else:
            print("attribution on object: not measured (no plain background to find the object)")
        print(f"{r['seconds']:.1f}s; wrote " + ", ".join(r["outputs"]))

    print_json_or(args, r, show)
    return 0
