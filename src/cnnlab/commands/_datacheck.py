"""``cnnlab data check``: resolve the target, run the checks with progress, write the
result (JSON and contact sheets, all or nothing) and print what was found."""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.commands._common import table


def run(args) -> int:
    from cnnlab.analysis import datacheck as dc
    from cnnlab.data.datasets import DATASETS, load_dataset
    from cnnlab.errors import CnnlabError, choices_msg
    from cnnlab.progress import Phases
    from cnnlab.runs.files import atomic_write_bytes, atomic_write_text

    for name, v, lo in (
        ("--limit", args.limit, 1),
        ("--folds", args.folds, 2),
        ("--top", args.top, 1),
    ):
        if v is not None and v < lo:
            raise CnnlabError(f"{name} must be ≥ {lo}")
    if not 0 <= args.near <= 64 or args.max_mad < 0:
        raise CnnlabError("--near must be in 0..64 and --max-mad ≥ 0")
    target = Path(args.target)
    is_folder = target.exists() or args.target not in DATASETS.names()
    if is_folder and not target.exists() and "/" not in args.target:
        raise CnnlabError(
            f"{args.target!r} is neither a folder nor a dataset; "
            + choices_msg("dataset", args.target, DATASETS.names()).split("; ", 1)[1]
        )
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise CnnlabError(f"--out {str(out)!r} is a file; give a folder")
    else:  # under the runs folder, never over an earlier check
        out = Path(args.runs_dir) / f"datacheck-{target.name if is_folder else args.target}"
        stem, i = out.name, 2
        while out.exists():
            out, i = out.with_name(f"{stem}-{i}"), i + 1
    with Phases(quiet=args.json) as bar:
        if is_folder:
            im = dc.scan_folder(target, args.limit, progress=lambda d, t: bar("reading", d, t))
        else:
            ds = load_dataset(args.target, args.data_dir)
            im = dc.scan_dataset(ds, args.limit)
        res = dc.check(im, args.near, args.max_mad, args.folds, not args.no_labels, progress=bar)
    result = res.to_dict()
    sheets = res.sheets(args.top)
    out.mkdir(parents=True, exist_ok=True)
    for name, png in sheets.items():
        atomic_write_bytes(out / f"{name}.png", png)
    atomic_write_text(out / "datacheck.json", json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _print(res, result, out, sheets)
    return 0


def _print(res, result: dict, out: Path, sheets: dict) -> None:
    s = result["summary"]
    rows = [
        ["images", f"{s['images']:,} ({', '.join(f'{k} {v:,}' for k, v in s['splits'].items())})"],
        ["classes", s["classes"]],
        ["unreadable files", s["unreadable"]],
        ["sizes", ", ".join(f"{k} ({v:,})" for k, v in list(s["sizes"].items())[:5])],
        ["modes", ", ".join(f"{k} ({v:,})" for k, v in s["modes"].items())],
        [
            "imbalance (largest/smallest class)",
            ", ".join(f"{k} {v:.2f}" for k, v in s["imbalance_ratio"].items()),
        ],
        [
            "exact duplicates",
            f"{s['exact_duplicate_groups']} groups, {s['exact_duplicates_across_splits']} across "
            f"splits, {s['exact_duplicates_with_other_labels']} with other labels",
        ],
        [
            "near-duplicates",
            f"{s['near_duplicate_pairs']} pairs, {s['near_duplicates_across_splits']} across "
            f"splits, {s['near_duplicates_with_other_labels']} with other labels",
        ],
    ]
    rows.append(["junk (probably not photos)", s["junk"]])
    v = s.get("label_check")
    if v is not None and not v["ok"]:
        rows.append(["likely label errors", f"not judged: {v['why']}"])
    elif "label_issues" in s:
        rows.append(
            [
                "likely label errors",
                f"{s['label_issues']:,} (cleanlab; the quick model's out-of-fold accuracy "
                f"{100 * v['accuracy']:.1f} %, 95 % interval {100 * v['interval'][0]:.1f}-"
                f"{100 * v['interval'][1]:.1f} %, chance {100 * v['chance']:.1f} %, "
                f"calibration error {v['ece']:.3f})",
            ]
        )
    table(rows, ["check", "found"], title=f"data check: {s['dataset']}")
    for f in result["unreadable"][:10]:
        print(f"unreadable: {f['file']} ({f['error']})")
    for j in result["junk"][:10]:
        print(f"junk: {j['id']} ({'; '.join(j['why'])})")
    for k, v in result["class_counts"].items():
        if v["empty"]:
            print(f"{k}: empty classes: {', '.join(v['empty'])}")
    if res.issues:
        table(
            [[r["id"], r["given"], r["predicted"], f"{r['p_given']:.3f}"] for r in res.issues[:15]],
            ["image", "given", "predicted", "p(given)"],
            title="most likely label errors",
        )
    print(f"written: {out / 'datacheck.json'}" + "".join(f", {out / n}.png" for n in sheets))
