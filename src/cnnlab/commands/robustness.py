"""cnnlab robustness"""

from __future__ import annotations

import sys

from cnnlab.commands._common import (
    add_analysis_args,
    add_command,
    add_names_arg,
    add_run_arg,
    kwargs_of,
    print_json_or,
    table,
)

ORDER = 45
ROBUSTNESS = "cnnlab.analysis.robustness"


def register(sub) -> None:
    p = add_command(
        sub,
        "robustness",
        run,
        "accuracy under corruptions (5 severities) and FGSM/PGD; OOD detection",
        "Accuracy of a run's model on its test set under corruptions (see --corruptions) "
        "at severities 1-5 and under FGSM/PGD attacks (L∞, [0, 1] pixel scale). "
        "Writes robustness.json, robustness.png and robustness.html into the run. "
        "With --ood DATASET (or --ood noise): AUROC and FPR at 95% TPR of the maximum-"
        "softmax and energy scores, and the threshold in <run>/ood.json that "
        "`cnnlab predict` uses to flag out-of-distribution inputs. "
        "The defaults (the whole test set, 9 corruptions × 5 severities, FGSM and PGD at "
        "4 radii) take minutes on a CPU; a progress bar shows what runs and its ETA. "
        "For a quick look: --limit 1000 --severity 3 --attacks fgsm.",
    )
    add_run_arg(p)
    add_names_arg(p, "--corruptions", f"{ROBUSTNESS}:CORRUPTIONS", "(default: all); 'none' to skip")
    p.add_argument("--severity", help="levels 1-5, comma list (default: all)")
    add_names_arg(p, "--attacks", f"{ROBUSTNESS}:ATTACKS", "(default: both); 'none' to skip")
    p.add_argument("--eps", help="attack radii in pixel scale (default 0.02,0.05,0.1,0.2)")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--pgd-step-size", type=float, help="default ε/4")
    p.add_argument(
        "--limit", type=int, help="use only the first N test images (quicker: e.g. 1000)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--ood",
        action="append",
        metavar="DATASET",
        help="score the test set against DATASET's test images or 'noise' (repeatable); "
        "only OOD detection runs",
    )
    p.add_argument("--ood-score", choices=["msp", "energy"], help="default: the better AUROC")
    add_analysis_args(p)


# what both the robustness and the OOD check take: which test images, where
SAMPLE = ("seed", "limit", "device", "data_dir")


def run(args) -> int:
    from cnnlab.analysis import robustness as rb
    from cnnlab.errors import CnnlabError

    if args.batch_size < 1:
        raise CnnlabError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.ood:
        r = rb.ood(args.run, args.ood, method=args.ood_score, **kwargs_of(args, *SAMPLE))

        def show_ood():
            print(f"in-distribution: {r['in_dataset']} test ({r['n_in']:,} images)")
            table(*reversed(rb.ood_rows(r)))
            if r["not_stored"]:
                print(f"warning: {r['not_stored']}", file=sys.stderr)
            elif r["outputs"]:
                print(
                    f"stored threshold {r['threshold']:.4f} on the {r['method']} score "
                    f"(95% of the test set passes) in {r['outputs'][0]}"
                )

        print_json_or(args, r, show_ood)
        return 0

    r = rb.robustness(
        args.run,
        **kwargs_of(args, "corruptions", "severity", "attacks", "eps", "pgd_steps"),
        **kwargs_of(args, "pgd_step_size", "batch_size", *SAMPLE),
    )

    def show():
        print(
            f"{r['dataset']} test ({r['n']:,} images, seed {r['seed']}): "
            f"clean accuracy {r['clean_acc']:.4f}"
        )
        if r["corruptions"]:
            h, rows = rb.table_rows(r)
            table(rows, h)
        h, rows = rb.attack_rows(r)
        if rows:
            table(rows, h)
        print(f"{r['seconds']:.1f}s; wrote " + ", ".join(r["outputs"]))

    print_json_or(args, r, show)
    return 0
