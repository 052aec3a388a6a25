"""Matplotlib figures without a display, and the one way a finished figure becomes a PNG.

On the ground floor, so the analyses, the report, the trainer, the studies and the
server draw alike::

    from cnnlab.figures import png_bytes, pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ...
    data = png_bytes(fig, dpi=100)  # the figure is closed

matplotlib is imported on the first call, never at import time (``cnnlab --help`` starts
without it).
"""

from __future__ import annotations

import base64
import io


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: float | None = None, tight_layout: bool = False, **savefig) -> bytes:
    """A matplotlib figure → PNG bytes; the figure is closed. ``dpi`` None keeps the
    figure's own; ``tight_layout`` lays it out first; ``savefig`` goes to
    ``Figure.savefig`` (e.g. ``bbox_inches="tight"``)."""
    plt = pyplot()
    if tight_layout:
        fig.tight_layout()
    if dpi is not None:
        savefig["dpi"] = dpi
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **savefig)
    finally:
        plt.close(fig)
    return buf.getvalue()


def png_base64(fig, **kw) -> str:
    """:func:`png_bytes` as base64 text (for a ``data:image/png;base64,`` URL)."""
    return base64.b64encode(png_bytes(fig, **kw)).decode("ascii")
