"""What ``cnnlab explain`` leaves in a run: ``<run>/explain/`` (one PNG per figure and
``explain.json``) and ``<run>/explain.html``, a self-contained page embedding the figures
(base64) with the images' labels, predictions and the share of attribution on the object.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from cnnlab.analysis.attribution import SHORT
from cnnlab.runs.files import atomic_write_bytes, atomic_write_text


def explain_html(res: dict, images: dict[str, bytes]) -> str:
    """The page for an explain result ``res`` and its figures ({title: PNG bytes})."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{i}</td><td>{e(t)}</td><td>{e(p)}</td><td>{q:.3f}</td></tr>"
        for i, t, p, q in zip(res["indices"], res["true"], res["pred"], res["prob"], strict=True)
    )
    onobj = "".join(
        f"<li>{e(SHORT[m])}: {v:.2f}</li>" for m, v in res.get("on_object_fraction", {}).items()
    )
    imgs = "".join(
        f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(data).decode()}'>"
        for title, data in images.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>cnnlab explain: {e(res['run'])}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:2px 8px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>Explanations: {e(Path(res['run']).name)}</h1>"
        f"<p>{len(res['indices'])} {e(res['dataset'])} test images ({e(res['select'])}); "
        f"methods: {e(', '.join(SHORT[m] for m in res['methods']))}; attributions of the "
        f"predicted class; {res['seconds']:.1f}s on {e(res['device'])}.</p>"
        + (
            "<p>Share of attribution on the object (the pixels that are not background; the "
            f"object covers {res['object_area']:.2f} of the image on average):</p><ul>{onobj}</ul>"
            if onobj
            else "<p>No share of attribution on the object: these images have no plain "
            "background to tell the object from.</p>"
            if res.get("object_area", 0) is None
            else ""
        )
        + f"{imgs}<h2>Images</h2><table><tr><th>index</th><th>true</th><th>predicted</th>"
        f"<th>p</th></tr>{rows}</table></body></html>\n"
    )


def save_explain(res: dict, images: dict[str, bytes]) -> list[str]:
    """Write the figures ({name: PNG bytes}), ``explain.json`` and ``explain.html`` into
    the run ``res["run"]``; return the paths written."""
    out = Path(res["run"]) / "explain"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in images.items():
        atomic_write_bytes(out / f"{name}.png", data)
        files.append(str(out / f"{name}.png"))
    atomic_write_text(out / "explain.json", json.dumps(res, indent=1))
    one = res["feature_map_image"]
    titles = {
        "attributions": "Attribution maps",
        "filters": "First-layer filters",
        "feature_maps": f"Feature maps (test image {one})",
        "attention": f"Attention maps (test image {one})",
    }
    page = Path(res["run"]) / "explain.html"
    atomic_write_text(page, explain_html(res, {titles[k]: v for k, v in images.items()}))
    return [*files, str(out / "explain.json"), str(page)]
