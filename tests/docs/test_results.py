"""docs/results.md is a view of benchmarks/results/: the committed page equals the rendered one."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("kind", "command", "commit", "date", "machine", "device", "torch", "seeds")


def render_module():
    spec = importlib.util.spec_from_file_location(
        "render_results", ROOT / "benchmarks" / "render_results.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_results_page_equals_the_rendered_one():
    page = (ROOT / "docs" / "results.md").read_text()
    assert page == render_module().render(), "run: python benchmarks/render_results.py"


def test_committed_figures_equal_the_rendered_ones_and_the_page_shows_each():
    mod = render_module()
    figs = mod.figures()
    assert figs
    page = (ROOT / "docs" / "results.md").read_text()
    for name, svg in figs.items():
        f = ROOT / "docs" / "img" / name
        assert f.is_file() and f.read_text() == svg, (
            f"run: python benchmarks/render_results.py ({name})"
        )
        assert f"(img/{name})" in page


def test_time_to_accuracy_curves_draw_every_epoch_of_every_loop():
    mod = render_module()

    def run(walls, accs):
        return {"epochs": [{"wall": w, "test_acc": a} for w, a in zip(walls, accs)]}

    def loop(walls, accs, epochs):
        s = {"epochs": epochs, "seeds": 1, "final_acc": accs[-1], "median_s_per_epoch": 1.0,
             "to": {"0.9": {"wall": None, "train": None}}}  # fmt: skip
        return {"runs": [run(walls, accs)], "summary": s}

    rec = {
        "kind": "speed-tta", "date": "2027-01-01", "device": "cpu", "seeds": [0],
        "targets": {"t": {"recipe": "r", "dataset": "d", "thresholds": [0.9], "loops": {
            "cnnlab": loop([5, 10, 15], [0.85, 0.88, 0.89], 3),
            "naive": loop([20, 40], [0.86, 0.87], 2)}}},
    }  # fmt: skip
    svg = mod.figures([rec])["time-to-accuracy-t-cpu.svg"]
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    lines = re.findall(r'<polyline points="([^"]+)"', svg)
    assert [len(p.split()) for p in lines] == [3, 2]  # one vertex per evaluated epoch
    assert "cnnlab, 3 epochs" in svg and "naive" in svg and "90 %" in svg
    assert mod.figures([rec]) == mod.figures([rec])  # deterministic bytes


def test_every_result_file_says_how_where_and_with_what_it_was_measured():
    files = sorted((ROOT / "benchmarks" / "results").glob("*/*.json"))
    assert files
    for f in files:
        d = json.loads(f.read_text())
        missing = [k for k in REQUIRED if k not in d]
        assert not missing, f"{f.name}: missing {missing}"
        assert re.fullmatch(r"[0-9a-f]{40}", d["commit"]), f.name
        assert f.parent.name.startswith(d["date"]), f"{f}: folder and date disagree"
        assert not d.get("tiny"), f"{f}: a smoke-run result does not belong here"


def test_rows_without_a_result_file_read_not_measured(tmp_path):
    mod = render_module()
    page = mod.render([])
    for recipe in ("alexnet-cifar10", "alexnet-fashion-mnist-224", "lenet5-fashion-mnist"):
        assert re.search(rf"\| `{recipe}` \| [^|]+ \| \| not measured \|", page), recipe


def test_several_seeds_give_mean_and_sd_and_a_gpu_names_its_card():
    mod = render_module()
    rec = {
        "kind": "accuracy",
        "recipe": "alexnet-cifar10",
        "dataset": "cifar10",
        "epochs": 60,
        "test_acc": [0.91, 0.93],
        "command": "c",
        "commit": "0" * 40,
        "date": "2027-01-01",
        "machine": "m",
        "device": "NVIDIA H200",
        "torch": "2.11",
        "seeds": [0, 1],
        "_file": "benchmarks/results/2027-01-01-h200/alexnet-cifar10.json",
    }
    page = mod.render([rec])
    row = next(line for line in page.splitlines() if "`alexnet-cifar10`" in line)
    assert "92.00 ± 1.41 %" in row and "GPU (H200)" in row and "not measured" not in row


@pytest.mark.parametrize("pattern", [r"\.\./shared", r"/tmp/[\w.-]+\.py", r"\bnotes/"])
def test_docs_and_readme_refer_to_no_path_outside_the_repository(pattern):
    files = [ROOT / "README.md", ROOT / "mkdocs.yml", *(ROOT / "docs").rglob("*")]
    files += [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.sh")]
    hits = [
        f.relative_to(ROOT).as_posix()
        for f in files
        if f.is_file()
        and f.suffix in {".md", ".yml", ".py", ".sh", ".ipynb", ".json"}
        and re.search(pattern, f.read_text())
    ]
    assert not hits
