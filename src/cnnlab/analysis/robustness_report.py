"""What the robustness sweep reports: the tables (corruptions by severity, attacks by ε),
the curves (``robustness.png``) and a self-contained HTML section for the run's report
(``robustness.html``), all from the sweep's result dict.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cnnlab.analysis.robustness_eval import ATTACKS
from cnnlab.figures import png_bytes, pyplot
from cnnlab.runs.files import atomic_write_bytes


def table_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one per corruption (accuracy per level, mean), then attacks."""
    levels = next(iter(res["corruptions"].values()))["levels"] if res["corruptions"] else []
    header = ["test", *[f"sev {lv}" for lv in levels], "mean"]
    rows = [["clean", *[""] * len(levels), f"{res['clean_acc']:.4f}"]]
    for name, v in res["corruptions"].items():
        rows.append([name, *[f"{a:.4f}" for a in v["acc"]], f"{v['mean']:.4f}"])
    if "mean_corruption_acc" in res:
        rows.append(["mean corruption", *[""] * len(levels), f"{res['mean_corruption_acc']:.4f}"])
    return header, rows


def attack_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    kinds = [k for k in ATTACKS if k in res]
    if not kinds:
        return [], []
    eps = res[kinds[0]]["eps"]
    header = ["attack", *[f"ε={e:g}" for e in eps]]
    rows = []
    for k in kinds:
        label = k.upper()
        if k == "pgd":
            label += f"-{res[k]['steps']}"
        rows.append([label, *[f"{a:.4f}" for a in res[k]["acc"]]])
    return header, rows


def plot_robustness(res: dict, path: Path) -> bytes:
    """Accuracy against severity per corruption (and against ε per attack), written to
    ``path``; returns the PNG."""
    plt = pyplot()
    kinds = [k for k in ATTACKS if k in res]
    ncol = 1 + bool(kinds)
    fig, axes = plt.subplots(1, ncol, figsize=(5.5 * ncol, 4), squeeze=False)
    ax = axes[0, 0]
    for name, v in res["corruptions"].items():
        ax.plot([0, *v["levels"]], [res["clean_acc"], *v["acc"]], marker="o", ms=3, label=name)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("corruptions")
    ax.grid(alpha=0.3)
    if res["corruptions"]:
        ax.legend(fontsize=7)
    if kinds:
        ax = axes[0, 1]
        for k in kinds:
            ax.plot([0, *res[k]["eps"]], [res["clean_acc"], *res[k]["acc"]], marker="o", label=k)
        ax.set_xlabel("ε (pixel scale, L∞)")
        ax.set_ylim(0, 1)
        ax.set_title("adversarial attacks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{Path(res['run']).name}: robustness on {res['dataset']} ({res['n']:,} images)")
    data = png_bytes(fig, dpi=100, tight_layout=True)
    atomic_write_bytes(path, data)
    return data


def _html_table(header, rows) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table class='robustness'><tr>{th}</tr>{body}</table>"


def html_section(res: dict, png: bytes | None = None) -> str:
    """A self-contained HTML fragment (a <section>) for the run's report."""
    parts = [
        "<section id='robustness'><h2>Robustness</h2>",
        f"<p>{res['n']:,} test images of {html.escape(res['dataset'])}, seed {res['seed']}; "
        f"clean accuracy {res['clean_acc']:.4f}"
        + (
            f", mean corruption accuracy {res['mean_corruption_acc']:.4f}"
            if "mean_corruption_acc" in res
            else ""
        )
        + ".</p>",
    ]
    if res["corruptions"]:
        parts.append(_html_table(*table_rows(res)))
    h, r = attack_rows(res)
    if r:
        note = ""
        if "pgd" in res:
            p = res["pgd"]
            note = (
                f"<p>PGD: {p['steps']} steps of size {p['step_size']}, random start; "
                "L∞ in [0, 1] pixel scale.</p>"
            )
        parts.append(_html_table(h, r) + note)
    if png:
        parts.append(
            "<img alt='robustness curves' src='data:image/png;base64,"
            + base64.b64encode(png).decode()
            + "'>"
        )
    parts.append("</section>")
    return "\n".join(parts) + "\n"
