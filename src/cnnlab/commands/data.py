"""cnnlab data"""

from __future__ import annotations

from cnnlab.commands._common import add_data_args, table

ORDER = 50


def register(sub) -> None:
    p = sub.add_parser("data", help="list datasets, where they are looked for, whether present")
    add_data_args(p, data_dir="also look here first")
    p.add_argument("--download", metavar="NAME", help="download a dataset now (checksums verified)")
    p.set_defaults(func=run)
    sub_data = p.add_subparsers(dest="data_action", metavar="ACTION")
    add_check_parser(sub_data)


def run(args) -> int:
    from cnnlab.data.datasets import DATASETS, fetch, search_roots
    from cnnlab.data.datasets import dataset_status as status

    if args.download:
        spec = DATASETS.get(args.download)
        print(f"{spec.name}: {fetch(spec, args.data_dir)}")
        return 0
    rows = []
    for name, spec in DATASETS.items():
        present, where = status(name, args.data_dir)
        rows.append([name, present, where, spec.description])
    table(rows, ["dataset", "present", "where", "description"])
    print(
        "looked for in: "
        + "; ".join(f"{lab} {p}" for lab, p in search_roots(args.data_dir))
        + " — each may hold the files or a <name>/ folder of them"
    )
    return 0


def add_check_parser(sub) -> None:
    c = sub.add_parser(
        "check",
        help="check a folder or dataset: unreadable files, class balance, sizes, duplicates "
        "across splits, likely label errors",
        description="Check a folder of images (PATH/<class>/* or PATH/{train,val,test}/<class>/*) "
        "or a dataset by name: unreadable files, class counts and imbalance, image sizes and "
        "modes, exact and near-duplicates within and across splits, and likely label errors "
        "(cleanlab on out-of-fold predictions of a quick model). Writes datacheck.json and "
        "contact sheets (PNG) into --out.",
    )
    c.add_argument("target", metavar="PATH|DATASET", help="a folder of images or a dataset name")
    add_data_args(c)
    c.add_argument("--limit", type=int, help="at most N images per split (spread evenly)")
    c.add_argument("--near", type=int, default=2, help="near-duplicates: dHash bits (default 2)")
    c.add_argument(
        "--max-mad",
        type=float,
        default=5.0,
        help="near-duplicates: mean grey-level difference at 28×28 (default 5)",
    )
    c.add_argument("--folds", type=int, default=3, help="label check: k-fold (default 3)")
    c.add_argument("--no-labels", action="store_true", help="skip the label-error check")
    c.add_argument("--top", type=int, default=48, help="suspects per contact sheet (default 48)")
    c.add_argument(
        "--out",
        help="output folder (default <runs-dir>/datacheck-<name>, numbered rather than "
        "overwriting an earlier check)",
    )
    c.add_argument("--runs-dir", default="runs", help="where the default --out goes (runs)")
    c.add_argument("--json", action="store_true", help="print the full result as JSON")
    c.set_defaults(func=run_check)


def run_check(args) -> int:
    from cnnlab.commands._datacheck import run

    return run(args)
