"""cnnlab compare"""

from __future__ import annotations

from cnnlab.commands._common import table

ORDER = 61


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="overlay the learning curves of several runs and tabulate their metrics",
        description="Tabulate final/best accuracy, gap and verdict of several runs, list the "
        "config keys in which they differ, and write an HTML page with the overlaid curves.",
    )
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="compare.html", help="HTML output (default compare.html)")
    p.set_defaults(func=run)


def run(args) -> int:
    from cnnlab.report.html import render_compare
    from cnnlab.runs.files import atomic_write_text

    page, rows, header, diff = render_compare(args.runs)
    table(rows, header)
    if diff:
        table(diff, ["config key", *[r[0] for r in rows]], title="config differences")
    atomic_write_text(args.out, page)
    print(f"wrote {args.out}")
    return 0
