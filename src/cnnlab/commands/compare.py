"""cnnlab compare"""

from __future__ import annotations

from cnnlab.commands._common import add_command, output_path, table

ORDER = 61


def register(sub) -> None:
    p = add_command(
        sub,
        "compare",
        run,
        "overlay the learning curves of several runs and tabulate their metrics",
        "Tabulate final/best accuracy, gap and verdict of several runs, list the "
        "config keys in which they differ, and write an HTML page with the overlaid curves.",
    )
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument(
        "--out",
        help="HTML output (default: compare.html in the runs' folder, numbered compare-2.html, "
        "... rather than overwriting an earlier one)",
    )


def run(args) -> int:
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.report.html import render_compare
    from cnnlab.runs.files import atomic_write_text

    page, rows, header, diff = render_compare(args.runs)
    table(rows, header)
    if diff:
        table(diff, ["config key", *[r[0] for r in rows]], title="config differences")
    out, note = output_path(args.out, Path(args.runs[0]).resolve().parent, "compare.html")
    try:
        atomic_write_text(out, page)
    except OSError as e:
        raise CnnlabError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {out}{note}")
    return 0
