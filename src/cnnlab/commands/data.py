"""cnnlab data"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_command,
    add_data_args,
    add_json_arg,
    kwargs_of,
    print_json_or,
    table,
)

ORDER = 50


def register(sub) -> None:
    p = add_command(sub, "data", run, "list datasets, where they are looked for, whether present")
    add_data_args(p, data_dir="also look here first")
    p.add_argument("--download", metavar="NAME", help="download a dataset now (checksums verified)")
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
    c = add_command(
        sub,
        "check",
        run_check,
        "check a folder or dataset: unreadable files, class balance, sizes, duplicates "
        "across splits, likely label errors",
        "Check a folder of images (PATH/<class>/* or PATH/{train,val,test}/<class>/*) "
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
    add_json_arg(c)


def run_check(args) -> int:
    from cnnlab.analysis.datacheck_run import check_target

    c = check_target(
        args.target,
        **kwargs_of(args, "data_dir", "limit", "near", "max_mad", "folds", "top", "out"),
        labels=not args.no_labels,
        runs_dir=args.runs_dir,
        quiet=args.json,
    )
    print_json_or(args, c.result, lambda: show_check(c))
    return 0


def show_check(c) -> None:
    from cnnlab.analysis.datacheck_run import summary_rows

    r = c.result
    table(summary_rows(r), ["check", "found"], title=f"data check: {r['summary']['dataset']}")
    for f in r["unreadable"][:10]:
        print(f"unreadable: {f['file']} ({f['error']})")
    for j in r["junk"][:10]:
        print(f"junk: {j['id']} ({'; '.join(j['why'])})")
    for k, v in r["class_counts"].items():
        if v["empty"]:
            print(f"{k}: empty classes: {', '.join(v['empty'])}")
    if c.check.issues:
        table(
            [
                [i["id"], i["given"], i["predicted"], f"{i['p_given']:.3f}"]
                for i in c.check.issues[:15]
            ],
            ["image", "given", "predicted", "p(given)"],
            title="most likely label errors",
        )
    print(f"written: {c.out / 'datacheck.json'}" + "".join(f", {c.out / n}.png" for n in c.sheets))
