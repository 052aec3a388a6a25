"""Render ``docs/results.md`` from the result files in ``benchmarks/results/``.

    python benchmarks/render_results.py            # rewrite docs/results.md
    python benchmarks/render_results.py --check    # exit 1 if the page is out of date

Every figure on the page comes from a JSON file ``benchmarks/results/<date>-<machine>/
<name>.json`` (command, commit, date, machine, device, torch version, seeds and the
numbers). Where several files make the same claim, the newest wins; files marked
``"tiny": true`` (smoke runs) are ignored. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"  # the figures the page shows (SVG, drawn here: no matplotlib)

# rows the accuracy table always shows: (recipe, dataset, target); a row without a result
# file reads "not measured"
EXPECTED = [
    ("(defaults: make run)", "mnist-sample", "≥ 97 % in < 2 min on a CPU"),
    ("lenet5-fashion-mnist", "fashion-mnist", "≥ 93 %"),
    ("lenet5-fashion-mnist-pgd", "fashion-mnist", "clean ≥ 84 %"),
    ("alexnet-fashion-mnist-224", "fashion-mnist", "≥ 92 % (d2l.ai: 88.5 %)"),
    ("alexnet-cifar10", "cifar10", "≥ 90 %"),
]


def load(root: Path = RESULTS) -> list[dict]:
    out = []
    for f in sorted(root.glob("*/*.json")):
        d = json.loads(f.read_text())
        if d.get("tiny"):
            continue
        d["_file"] = f.relative_to(ROOT).as_posix()
        out.append(d)
    return out


def where(d: dict) -> str:
    dev = d["device"]
    return "CPU" if dev == "cpu" else f"GPU ({dev.replace('NVIDIA ', '')})"


def pct(x: float, nd: int = 2) -> str:
    return f"{100 * x:.{nd}f} %"


def mean_sd(xs: list[float], nd: int = 2) -> str:
    if len(xs) == 1:
        return pct(xs[0], nd)
    m, s = statistics.mean(xs), statistics.stdev(xs)
    return f"{100 * m:.{nd}f} ± {100 * s:.{nd}f} %"


def newest(rs: list[dict]) -> dict:
    return max(rs, key=lambda d: (d["date"], d["_file"]))


def src(d: dict) -> str:
    return f"[{d['date']}](#sources)"


def accuracy(rs: list[dict]) -> list[str]:
    acc = [d for d in rs if d["kind"] == "accuracy"]
    lines = [
        "## Accuracy per recipe and dataset",
        "",
        "Test accuracy at the end of the recipe's epochs; mean ± standard deviation where "
        "several seeds ran.",
        "",
        "| recipe | dataset | epochs | test accuracy | seeds | target | measured on | date |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    keys = [(r, ds) for r, ds, _ in EXPECTED]
    keys += sorted({(d["recipe"], d["dataset"]) for d in acc} - set(keys))
    target = {(r, ds): t for r, ds, t in EXPECTED}
    for key in keys:
        found = [d for d in acc if (d["recipe"], d["dataset"]) == key]
        if not found:
            lines.append(f"| `{key[0]}` | {key[1]} | | not measured | | {target[key]} | | |")
            continue
        for dev in sorted({where(d) for d in found}):
            d = newest([x for x in found if where(x) == dev])
            name = key[0] if key[0].startswith("(") else f"`{key[0]}`"
            lines.append(
                f"| {name} | {key[1]} | {d['epochs']} | {mean_sd(d['test_acc'])} | "
                f"{len(d['test_acc'])} | {target.get(key, '')} | {dev} | {src(d)} |"
            )
    lines.append("")
    for d in sorted((d for d in rs if d["kind"] == "ablation"), key=lambda d: d["varied"]):
        lines += [
            f"### Ablation: `{d['varied']}` ({d['dataset']}, {where(d)})",
            "",
            f"{d['budget']}; mean ± sd over {len(d['seeds'])} seeds.",
            "",
            "| value | test accuracy |",
            "|---|---:|",
        ]
        for k, v in d["rows"].items():
            lines.append(f"| {k} | {100 * v['mean']:.2f} ± {100 * v['sd']:.2f} % |")
        lines.append("")
    return lines


def _secs(c: dict, epochs: int) -> str:
    if c["wall"] is None:
        return f"not in {epochs} epochs"
    cell = f"{c['wall']:.0f} s ({c['train']:.0f} s)"
    return cell if c.get("reached", 1) == c.get("of", 1) else f"{cell}, {c['reached']} seeds"


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


def svg_curves(series: list[tuple[str, list[tuple[float, float]]]], thresholds, title: str) -> str:
    """Test accuracy against seconds since launch, one line per series, dashed lines at the
    thresholds: a small deterministic SVG (the same input gives the same bytes)."""
    w, h, left, right, top, bottom = 720, 380, 58, 170, 30, 44
    pts = [p for _, ps in series for p in ps]
    x_hi = max(x for x, _ in pts)
    step = 30 if x_hi <= 300 else 60 if x_hi <= 900 else 300
    x_hi = step * (int(x_hi // step) + 1)
    y_top = max(max(y for _, y in pts), max(thresholds, default=0))
    y_hi = (int(y_top * 100) + 1) / 100
    y_lo = max(0.0, min(thresholds, default=y_hi) - 0.06)
    pw, ph = w - left - right, h - top - bottom

    def sx(x):
        return left + pw * x / x_hi

    def sy(y):
        return top + ph * (1 - (min(max(y, y_lo), y_hi) - y_lo) / (y_hi - y_lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
        f'height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">{html_escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    for i in range(int(round((y_hi - y_lo) * 100)) + 1):
        y = y_lo + i / 100
        out.append(
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{100 * y:.0f} %</text>'
        )
    for x in range(0, int(x_hi) + 1, step):
        out += [
            f'<line x1="{sx(x):.1f}" y1="{top + ph}" x2="{sx(x):.1f}" y2="{top + ph + 4}" stroke="#888"/>',
            f'<text x="{sx(x):.1f}" y="{top + ph + 17}" text-anchor="middle">{x}</text>',
        ]  # fmt: skip
    out.append(
        f'<text x="{left + pw / 2}" y="{h - 8}" text-anchor="middle">'
        "seconds since the process started</text>"
    )
    for t in thresholds:
        out += [
            f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" '
            'stroke="#aaa" stroke-dasharray="4 3"/>',
            f'<text x="{left + pw - 4}" y="{sy(t) - 3:.1f}" text-anchor="end" fill="#666">'
            f"{100 * t:g} %</text>",
        ]  # fmt: skip
    for i, (name, ps) in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
        out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="{c}"/>' for x, y in ps]
        ly = top + 14 + 18 * i
        out += [
            f'<line x1="{w - right + 10}" y1="{ly - 4}" x2="{w - right + 30}" y2="{ly - 4}" '
            f'stroke="{c}" stroke-width="2"/>',
            f'<text x="{w - right + 35}" y="{ly}">{html_escape(name)}</text>',
        ]  # fmt: skip
    return "\n".join([*out, "</svg>"]) + "\n"


def html_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tta_groups(rs: list[dict]) -> dict[tuple[str, str], list[tuple[dict, dict]]]:
    """`cnnlab bench`'s time-to-accuracy files by (device, target): the newest file per
    cnnlab epoch budget, shortest budget first, as (file, target entry) pairs."""
    newest_of: dict[tuple[str, str, int], tuple[dict, dict]] = {}
    for d in sorted((x for x in rs if x["kind"] == "speed-tta"), key=lambda x: x["date"]):
        for key, entry in d["targets"].items():
            c = entry["loops"].get("cnnlab")
            budget = c["summary"]["epochs"] if c else 0
            newest_of[(where(d), key, budget)] = (d, entry)
    out: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for (dev, key, _), v in sorted(newest_of.items()):
        out.setdefault((dev, key), []).append(v)
    # one measurement day per (device, target): older budgets are not the current figures
    return {
        k: [v for v in g if v[0]["date"] == max(x[0]["date"] for x in g)] for k, g in out.items()
    }


def slug(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() else "-" for c in p.lower()).strip("-") for p in parts)


def tta_series(group: list[tuple[dict, dict]]) -> list[tuple[str, list[tuple[float, float]]]]:
    """One line per cnnlab budget (its first seed) and per reference loop (from the newest
    file that ran it): (wall seconds since launch, test accuracy) at each epoch's end."""
    series, refs = [], {}
    for _, entry in group:
        for loop, v in entry["loops"].items():
            run = v["runs"][0]
            pts = [(e["wall"], e["test_acc"]) for e in run["epochs"] if e.get("wall") is not None]
            while len(pts) > 1 and pts[0][1] < min(entry["thresholds"]) - 0.06:
                pts = pts[1:]  # below the plot: the line starts at its first visible point
            if not pts:
                continue
            if loop == "cnnlab":
                series.append((f"cnnlab, {v['summary']['epochs']} epochs", pts))
            else:
                refs[loop] = pts
    return series + sorted(refs.items())


def figures(rs: list[dict] | None = None) -> dict[str, str]:
    """The page's SVG figures by file name (under docs/img/)."""
    rs = load() if rs is None else rs
    out = {}
    for (dev, key), group in tta_groups(rs).items():
        series = tta_series(group)
        if series:
            ths = group[-1][1]["thresholds"]
            title = f"{group[-1][1]['dataset']}: test accuracy against time ({dev})"
            out[f"time-to-accuracy-{slug(key, dev)}.svg"] = svg_curves(series, ths, title)
    return out


def time_to_accuracy(rs: list[dict]) -> list[str]:
    """`cnnlab bench`'s time-to-accuracy runs: per device and target, the newest file per
    epoch budget, as a table and as curves."""
    groups = tta_groups(rs)
    if not groups:
        return []
    lines = [
        "## Time to accuracy: what users run against the reference loops",
        "",
        "`cnnlab bench` (`make bench`) runs the shipped recipe and `cnnlab train`'s defaults "
        "as whole `cnnlab train` processes and the plain-PyTorch reference loops (`naive`: "
        "torchvision dataset + DataLoader, batch 64; `resident`: the dataset as one tensor, "
        "batch 256) on the same data. A cell is the wall-clock seconds from launching the "
        "process until the first epoch at that test accuracy had been evaluated (start-up, "
        "data loading and evaluation included), with the training seconds alone in brackets. "
        "A shorter `--epochs` budget is its own schedule (the learning rate anneals to its "
        "end), not the first epochs of a longer run.",
        "",
    ]
    for (dev, key), group in groups.items():
        ths = group[-1][1]["thresholds"]
        what = group[-1][1]["recipe"]
        what = f"`--recipe {what}`" if what else "the defaults"
        lines += [
            f"### {group[-1][1]['dataset']}: `cnnlab train` with {what} ({dev})",
            "",
            "| loop | source | s/epoch | " + " | ".join(f"to {100 * t:g} %" for t in ths)
            + " | final test acc | epochs |",
            "|---|---|---:|" + "---:|" * len(ths) + "---:|---:|",
        ]  # fmt: skip
        notes = []
        for d, entry in group:
            for loop, v in entry["loops"].items():
                sm = v["summary"]
                cells = [
                    _secs(dict(sm["to"][f"{t:g}"], of=sm["seeds"]), sm["epochs"])
                    if f"{t:g}" in sm["to"] else "—"
                    for t in ths
                ]  # fmt: skip
                acc = mean_sd(final_accs(v)) if sm["seeds"] > 1 else pct(sm["final_acc"])
                lines.append(
                    f"| {loop} | {src(d)} | {sm['median_s_per_epoch']:.2f} | " + " | ".join(cells)
                    + f" | {acc} | {sm['epochs']} |"
                )  # fmt: skip
            m = d.get("machine_info", {})
            ratios = ", ".join(f"{k} {r:.2f}×" for k, r in entry.get("epoch_ratios", {}).items())
            notes.append(
                f"{src(d)}: seeds {', '.join(map(str, d['seeds']))}; "
                + (f"epoch time, reference over cnnlab: {ratios}; " if ratios else "")
                + f"load average {m.get('load_avg')} at the start, {m.get('load_avg_end')} at "
                "the end" + (f". {d['note']}" if d.get("note") else "")
            )
        fig = f"time-to-accuracy-{slug(key, dev)}.svg"
        lines += ["", *(f"- {n}" for n in notes), "", f"![test accuracy against time]"
                  f"(img/{fig})", ""]  # fmt: skip
    return lines


def final_accs(v: dict) -> list[float]:
    """Each seed's final test accuracy (its last epoch's)."""
    return [r["epochs"][-1]["test_acc"] for r in v["runs"] if r["epochs"]]


def speed(rs: list[dict]) -> list[str]:
    lines = [
        "## Speed against the reference loops",
        "",
        "`cnnlab bench --plain` trains the article's plain LeNet-5 on Fashion-MNIST in three loops, "
        "interleaved epoch by epoch: `naive` (torchvision dataset + DataLoader), `resident` "
        "(the dataset as one device tensor) and cnnlab's trainer. The ratio is the "
        "reference loop's median epoch time over cnnlab's: how much faster cnnlab is.",
        "",
        "| measured on | runs | loop | s/epoch | cnnlab faster by | test acc (cnnlab) | date |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    by_dev: dict[str, list[dict]] = {}
    for d in (d for d in rs if d["kind"] == "speed"):
        by_dev.setdefault(where(d), []).append(d)
    for dev, runs in sorted(by_dev.items()):
        day = max(d["date"] for d in runs)
        runs = [d for d in runs if d["date"] == day]  # the newest day's runs
        for loop in ("naive", "resident"):
            have = [d for d in runs if loop in d["loops"]]
            if not have:
                continue
            ratios = [
                d["loops"][loop]["seconds_per_epoch"] / d["loops"]["cnnlab"]["seconds_per_epoch"]
                for d in have
            ]
            secs = statistics.median(d["loops"][loop]["seconds_per_epoch"] for d in have)
            ours = statistics.median(d["loops"]["cnnlab"]["seconds_per_epoch"] for d in have)
            r = f"{statistics.mean(ratios):.2f}×"
            if len(ratios) > 1:
                r += f" (runs: {', '.join(f'{x:.2f}' for x in ratios)})"
            acc = have[-1]["loops"]["cnnlab"]["test_acc"]
            lines.append(
                f"| {dev} | {len(have)} | {loop} | {secs:.3f} (cnnlab {ours:.3f}) | {r} | "
                f"{pct(acc)} after {have[-1]['epochs']} epochs | {src(have[-1])} |"
            )
    lines.append("")
    tta = [d for d in rs if d["kind"] == "time-to-accuracy"]
    if tta:
        d = newest(tta)
        lines += [
            f"### Time to accuracy ({where(d)})",
            "",
            "Training seconds, CUDA-graph capture and evaluation excluded.",
            "",
            "| model | s/epoch | to 90 % | to 91 % | accuracy at the end |",
            "|---|---:|---:|---:|---:|",
        ]
        for k, v in d["rows"].items():
            lines.append(
                f"| {k} | {v['seconds_per_epoch']:.3f} | {v['seconds_to_90']:.2f} s | "
                f"{v['seconds_to_91']:.2f} s | {pct(v['final_acc'])} |"
            )
        lines.append("")
    alex = [d for d in rs if d["kind"] == "alexnet"]
    if alex:
        lines += [
            "### AlexNet throughput against torchvision's model",
            "",
            "Synthetic 224 × 224 batches; images per second, training step and inference. "
            "torchvision's `alexnet` runs in a plain eager loop in the same process.",
            "",
            "| measured on | batch | model | how | train img/s | infer img/s | vs torchvision "
            "(train / infer) | date |",
            "|---|---:|---|---|---:|---:|---|---|",
        ]
        for dev in sorted({where(d) for d in alex}):
            d = newest([x for x in alex if where(x) == dev])
            ref = d["reference"]
            for name, v in d["models"].items():
                lines.append(
                    f"| {dev} | {d['batch']} | `{name}` | {v['how']} | {v['train']:,.0f} | "
                    f"{v['infer']:,.0f} | {v['train'] / ref['train']:.2f}× / "
                    f"{v['infer'] / ref['infer']:.2f}× | {src(d)} |"
                )
            lines.append(
                f"| {dev} | {d['batch']} | torchvision `alexnet` | eager | "
                f"{ref['train']:,.0f} | {ref['infer']:,.0f} | reference | {src(d)} |"
            )
        lines.append("")
    return lines


def serving(rs: list[dict]) -> list[str]:
    load = [d for d in rs if d["kind"] == "serve-load"]
    if load:
        return serving_load(newest(load))
    sv = [d for d in rs if d["kind"] == "serve"]
    if not sv:
        return []
    d = newest(sv)
    lines = [
        "## Serving load",
        "",
        f"`cnnlab serve` under {d['clients']} concurrent keep-alive clients, one 28 × 28 PNG "
        f"per request ({where(d)}; {d.get('note', '')}).",
        "",
        "| backend, batching | predictions/s | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in d["rows"].items():
        lines.append(
            f"| {k} | {v['pred_per_s']:,} | {v['p50_ms']:.1f} ms | {v['p99_ms']:.1f} ms | "
            f"{v['errors']} |"
        )
    return lines + [""]


def serving_load(d: dict) -> list[str]:
    """The table of `make bench-serve`: backend × batching × clients (hey)."""
    lines = [
        "## Serving load",
        "",
        f"`cnnlab serve` ({d['model']}, one 28 × 28 PNG per request, {where(d)}, server model "
        f"threads {d['server_threads']}) driven by `hey` for {d['seconds_per_point']:g} s per "
        f"point; {d['note']}. Command: `{d['command']}`.",
        "",
        "| backend | batching | clients | predictions/s | p50 | p99 | errors | source |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['backend']} | {r['batching']} | {r['clients']} | {r['pred_per_s']:,} | "
            f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['errors']} | {src(d)} |"
        )
    return lines + [""]


def robustness(rs: list[dict]) -> list[str]:
    rb = sorted((d for d in rs if d["kind"] == "robustness"), key=lambda d: -d["clean"])
    if not rb:
        return []
    eps = rb[0]["eps"]
    lines = [
        "## Robustness",
        "",
        "LeNet-5 on the Fashion-MNIST test set (10,000 images): clean accuracy, the mean over "
        "9 corruptions × 5 severities, and L∞ attacks at pixel-scale ε (PGD-10: step ε/4, "
        "random start).",
        "",
        "| run | clean | mean corruption | "
        + " | ".join(f"FGSM ε={e}" for e in eps)
        + " | "
        + " | ".join(f"PGD-10 ε={e}" for e in eps)
        + " | measured on |",
        "|---|" + "---:|" * (2 + 2 * len(eps)) + "---|",
    ]
    for d in rb:
        cells = [pct(x) for x in d["fgsm"] + d["pgd10"]]
        lines.append(
            f"| {d['run']} | {pct(d['clean'])} | {pct(d['mean_corruption'])} | "
            + " | ".join(cells)
            + f" | {where(d)}, {src(d)} |"
        )
    lines.append("")
    for d in (d for d in rs if d["kind"] == "ood"):
        lines += [
            f"### Out-of-distribution scores ({d['run']})",
            "",
            "| inputs | MSP AUROC | energy AUROC | energy FPR at 95 % TPR |",
            "|---|---:|---:|---:|",
        ]
        for k, v in d["rows"].items():
            lines.append(
                f"| {k} | {v['msp_auroc']:.3f} | {v['energy_auroc']:.3f} | "
                f"{v['energy_fpr95']:.3f} |"
            )
        lines.append("")
    return lines


def semi(rs: list[dict]) -> list[str]:
    lines = []
    for d in (d for d in rs if d["kind"] == "semi"):
        lines += [
            "## Semi-supervised learning",
            "",
            f"{d['labels_per_class']} labels per class of {d['dataset']}, {d['steps']:,} "
            f"steps, one seed ({where(d)}).",
            "",
            "| method | test accuracy |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {pct(v)} |" for k, v in d["rows"].items()]
        lines.append("")
    return lines


def gans(rs: list[dict]) -> list[str]:
    lines = []
    for d in (d for d in rs if d["kind"] == "gan"):
        lines += [
            "## GAN scores",
            "",
            f"Scored by a judge classifier ({d['judge']}) on {d['samples']:,} generated and "
            f"{d['samples']:,} real images: the Fréchet distance in the judge's feature space "
            f"(not the Inception FID; real train vs real test: {d['floor']:.2f}) and class "
            f"fidelity, the share of samples the judge assigns to the asked class "
            f"({where(d)}).",
            "",
            "| generator | Fréchet distance | class fidelity |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {k} | {v['frechet']:.1f} | {v['fidelity']:.3f} |" for k, v in d["rows"].items()
        ]
        lines.append("")
    return lines


def tta(rs: list[dict]) -> list[str]:
    lines = []
    for d in (d for d in rs if d["kind"] == "tta"):
        r = d["rows"]
        ch = [x["change_points"] for x in r]
        sd = f" ± {statistics.stdev(ch):.2f}" if len(ch) > 1 else ""
        lines += [
            "## Test-time augmentation",
            "",
            f"`{d['recipe']}` with `{' '.join(d['overrides'])}`, its best checkpoint (by "
            "validation accuracy) on the official test set, scored once by "
            "`cnnlab.evaluate(..., tta=True)` (what `cnnlab eval --tta` runs: the plain and "
            f"the TTA accuracy from one call): softmax averaged over {len(d['views'])} views (the "
            "original and its mirror image, each also shifted 1 pixel up, down, left and "
            f"right: what the recipe's crop + flip allow); mean ± sd over seeds "
            f"{', '.join(map(str, d['seeds']))} ({where(d)}).",
            "",
            "| | test accuracy |",
            "|---|---:|",
            f"| without TTA | {mean_sd([x['accuracy'] for x in r])} |",
            f"| with TTA | {mean_sd([x['accuracy_tta'] for x in r])} |",
            f"| change | {statistics.mean(ch):+.2f}{sd} points |",
            "",
        ]
    return lines


def finetune(rs: list[dict]) -> list[str]:
    lines = []
    for d in (d for d in rs if d["kind"] == "finetune"):
        src = "; ".join(
            f"{k}: {v['epochs']} epochs, best validation accuracy {pct(v['best_val_acc'])}"
            for k, v in d["sources"].items()
        )
        lines += [
            "## Fine-tuning a small folder",
            "",
            f"{d['model']} on {d['target']}: {d['epochs']} epochs, batch {d['batch_size']}, "
            f"final-epoch test accuracy, mean ± sd over seeds {', '.join(map(str, d['seeds']))} "
            f"({where(d)}). Sources — {src}. *init*: the source's weights (a fresh "
            "classifier where the classes differ); *fine_tune*: also "
            + ", ".join(
                f"`{o}`"
                for o in next(v for k, v in d["rows"].items() if "fine_tune" in k)["overrides"]
                if not o.startswith("model.init_from")
            )
            + ".",
            "",
            "| start | test accuracy |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {mean_sd(v['test_acc'])} |" for k, v in d["rows"].items()]
        lines.append("")
    return lines


def folder_parity(rs: list[dict]) -> list[str]:
    lines = []
    for d in (d for d in rs if d["kind"] == "folder_parity"):
        same = " and ".join(f"{k} {'bit-identical' if v else 'DIFFERENT'}" for k, v in
                            d["bit_identical"].items())  # fmt: skip
        lines += [
            "## A folder of PNGs against the IDX files",
            "",
            f"{d['model']} trained on the first {d['n_train']:,} Fashion-MNIST training "
            f"images, once from the IDX files and once from PNG files written from them "
            f"(`imagefolder`, resident), {d['epochs']} epochs, batch {d['batch_size']}; "
            f"final-epoch accuracy on the same {d['n_test']:,} test images, mean ± sd over "
            f"seeds {', '.join(map(str, d['seeds']))} ({where(d)}). Decoded tensors: {same} "
            f"({d['decode_seconds']} s to decode {d['n_train'] + d['n_test']:,} PNGs).",
            "",
            "| source | test accuracy |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {mean_sd(v['test_acc'])} |" for k, v in d["rows"].items()]
        lines.append("")
    return lines


def imbalance(rs: list[dict]) -> list[str]:
    lines = []
    for d in (d for d in rs if d["kind"] == "imbalance"):
        counts = d["train_counts"]
        minor = ", ".join(d["minority_classes"])
        n_min = min(counts.values())
        n_maj = max(counts.values())
        t = d["test_sets"]

        def ms(row: dict, split: str, key: str) -> str:
            v = row[split][key]
            return f"{100 * v['mean']:.2f} ± {100 * v['sd']:.2f} %"

        lines += [
            "## Class imbalance",
            "",
            f"{d['model']} on a Fashion-MNIST folder where four classes ({minor}) keep "
            f"{n_min:,} training images and the other six {n_maj:,} (imbalance "
            f"{n_maj / n_min:.0f}×): {d['epochs']} epochs, batch {d['batch_size']}, final-epoch "
            f"metrics, mean ± sd over seeds {', '.join(map(str, d['seeds']))} ({where(d)}). "
            f"*Official test*: the {t['official']:,} test images, 1,000 per class, where "
            "accuracy is balanced accuracy; *imbalanced test*: the "
            f"{t['imbalanced']:,} of them with the training mix.",
            "",
            "| setting | official test: balanced accuracy | macro-F1 | minority recall | "
            "majority recall | imbalanced test: accuracy | macro-F1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for k, r in d["rows"].items():
            lines.append(
                f"| {k} | {ms(r, 'official', 'accuracy')} | {ms(r, 'official', 'macro_f1')} | "
                f"{ms(r, 'official', 'minority_recall')} | "
                f"{ms(r, 'official', 'majority_recall')} | "
                f"{ms(r, 'imbalanced', 'accuracy')} | {ms(r, 'imbalanced', 'macro_f1')} |"
            )
        lines.append("")
    return lines


def photos(rs: list[dict]) -> list[str]:
    """One table from every ``photos`` record (one per arm and seed run of
    ``benchmarks/photos.py``): runs grouped by arm and the settings the run used."""
    recs = [d for d in rs if d["kind"] == "photos"]
    if not recs:
        return []
    groups: dict[tuple, list[dict]] = {}
    for d in recs:
        for name, a in d["arms"].items():
            for r in a["runs"]:
                st = r["settings"]
                side = f"{st['size']} px" if st["size"] else "the loader's side"
                what = (
                    f"{st['model']}, {side}, batch {st['batch']}, Adam {st['lr']:g}, "
                    f"{st['epochs']} epochs, val {st['val_fraction']:g}, select {st['select']}"
                )
                groups.setdefault((name, what), []).append({**r, "_commit": d["commit"][:7]})
    lines = [
        "## A folder of photos: the one-liner against hand-tuned runs",
        "",
        "398 phone-camera-like JPEGs of two classes (`benchmarks/photo_folder.py`: real "
        "photographs from scikit-image as backgrounds and textures, 640 × 480 to 2592 × "
        "1944; `train/` 247 files with one placeholder GIF, `val/` 152 = the test set), "
        "each arm trained from scratch with `cnnlab train` on the CPU; test accuracy of the "
        "checkpoint the run serves (best where kept, else last) and of the last epoch, mean "
        "± sd over the seeds listed.",
        "",
        "| arm | settings (as chosen or given) | code | seeds | test accuracy | last epoch |",
        "|---|---|---|---|---:|---:|",
    ]
    for (name, what), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        code = ", ".join(f"`{c}`" for c in dict.fromkeys(r["_commit"] for r in runs))
        lines.append(
            f"| {name} | {what} | {code} | {', '.join(str(r['seed']) for r in runs)} | "
            f"{mean_sd([r['test_acc'] for r in runs])} | "
            f"{mean_sd([r['last_test_acc'] for r in runs])} |"
        )
    return lines + [""]


def sources(rs: list[dict]) -> list[str]:
    lines = [
        "## Sources",
        "",
        "| file | command | commit | machine | torch | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for d in rs:
        cmd = d["command"].replace("|", "\\|")
        lines.append(
            f"| `{d['_file']}` | `{cmd}` | `{d['commit'][:10]}` | {d['machine']} | "
            f"{d['torch']} | {', '.join(map(str, d['seeds']))} |"
        )
    return lines + [""]


def render(rs: list[dict] | None = None) -> str:
    rs = load() if rs is None else rs
    head = [
        "# Results",
        "",
        "<!-- generated by benchmarks/render_results.py from benchmarks/results/; "
        "do not edit by hand -->",
        "",
        "Every figure below is read from a result file under `benchmarks/results/` that "
        "records the command, commit, date, machine, device, torch version and seeds; the "
        "[sources](#sources) table lists them. GPU figures say which card. CPU figures come "
        "from a 2-core development machine, often shared with other jobs, so CPU times are "
        "upper bounds; ratios were measured with the compared loops interleaved. Rows marked "
        "*not measured* need a GPU run (`benchmarks/gpu_results.sh`).",
        "",
    ]
    body = (
        accuracy(rs)
        + time_to_accuracy(rs)
        + speed(rs)
        + serving(rs)
        + robustness(rs)
        + semi(rs)
        + gans(rs)
        + tta(rs)
        + finetune(rs)
        + folder_parity(rs)
        + imbalance(rs)
        + photos(rs)
    )
    return "\n".join(head + body + sources(rs)).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Render docs/results.md from benchmarks/results/.")
    p.add_argument("--check", action="store_true", help="fail if the page is out of date")
    a = p.parse_args(argv)
    rs = load()
    outputs = {PAGE: render(rs), **{IMG / n: svg for n, svg in figures(rs).items()}}
    if a.check:
        stale = [f for f, text in outputs.items() if not f.is_file() or f.read_text() != text]
        for f in stale:
            print(f"{f} is out of date: run python benchmarks/render_results.py")
        return 1 if stale else 0
    for f, text in outputs.items():
        f.write_text(text)
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
