"""cnnlab data"""

from __future__ import annotations

from cnnlab.commands._common import add_data_args, table

ORDER = 50


def register(sub) -> None:
    p = sub.add_parser("data", help="list datasets, where they are looked for, whether present")
    add_data_args(p, data_dir="also look here first")
    p.add_argument("--download", metavar="NAME", help="download a dataset now (checksums verified)")
    p.set_defaults(func=run)


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
