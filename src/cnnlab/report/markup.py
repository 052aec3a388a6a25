"""The report's HTML pieces: the page around the sections, tables, images, numbers."""

from __future__ import annotations

import html
import json

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.verdict{font-size:1.1em;padding:.6em 1em;border-radius:6px;background:#eef5ff}
.overfitting,.gap{background:#fff1e6}.flag{color:#b00;font-weight:bold}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}img{max-width:100%}
.note{color:#666;font-size:.9em}
"""


def img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def table(rows: list[list], header: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def pct(v) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) else "–"


def json_block(obj, limit: int = 6000) -> str:
    text = json.dumps(obj, indent=1, default=str)
    if len(text) > limit:
        text = text[:limit] + "\n… (truncated)"
    return f"<pre>{html.escape(text)}</pre>"


def page(title: str, parts: list[str]) -> str:
    """A whole self-contained page: ``title``, the style sheet, then ``parts``, one a line."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
