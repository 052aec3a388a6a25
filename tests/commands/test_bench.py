"""`cnnlab bench --plain`: what it passes to the study and what it prints from its result
(the study itself is replaced by a made-up result; tests/studies/test_bench.py runs it)."""

import json

import pytest

from cnnlab.cli import main
from cnnlab.studies import bench


def summary(seconds: float) -> dict:
    return {
        "median_s_per_epoch": seconds,
        "median_cpu_s_per_epoch": seconds * 2,
        "images_per_s": 60000 / seconds,
        "test_acc": 0.9012,
        "time_to_90": 3 * seconds,
        "time_to_91": None,
        "peak_rss_mb": 512.0,
        "gpu_peak_mb": None,
        "rss_growth_mb": 1.25,
    }


def made_up_result() -> dict:
    cnnlab = summary(1.0) | {"one_time_seconds": 0.5}
    return {
        "spec": {"epochs": 2},
        "loops": {"cnnlab": {"summary": cnnlab}, "naive": {"summary": summary(4.0)}},
        "ratios": {"naive": {"speedup_wall": 4.0, "speedup_cpu": 3.5}},
        "resident_memory_ratio": 1.0312,
        "scaling": {
            "by_batch_size": [
                {"batch_size": 64, "seconds": 1.5, "cpu_seconds": 2.25, "images_per_s": 40000}
            ],
            "by_dataset_size": [
                {"fraction": 0.5, "images": 30000, "seconds": 0.75, "cpu_seconds": 1.5}
            ],
        },
        "alexnet": {
            "size": 224,
            "batch": 16,
            "device": "cpu",
            "models": {
                "alexnet-torchvision": {
                    "train_images_per_s": 10.0,
                    "infer_images_per_s": 30.0,
                    "train_vs_torchvision": 1.25,
                    "infer_vs_torchvision": 1.5,
                },
                "no-such-alexnet": {"skipped": "not registered"},
            },
        },
        "wall_seconds": 42.0,
    }


@pytest.fixture
def plain_bench(monkeypatch, tmp_path):
    seen = {}

    def run_bench(**kwargs):
        seen.update(kwargs)
        return made_up_result()

    monkeypatch.setattr(bench, "run_bench", run_bench)
    out = tmp_path / "b.json"
    return seen, out


def test_plain_bench_passes_its_flags_and_prints_every_table(plain_bench, capsys):
    seen, out = plain_bench
    argv = ["bench", "--plain", "--quick", "--batch-sizes", "64", "--fractions", "0.5"]
    assert main([*argv, "--loops", "cnnlab,naive", "--out", str(out)]) == 0
    assert seen["epochs"] == 15  # --plain's default for every loop
    assert seen["batch_sizes"] == (64,) and seen["fractions"] == (0.5,)
    assert seen["loops"] == ("cnnlab", "naive") and seen["alexnet"] and seen["quick"]
    text = capsys.readouterr().out
    assert "LeNet-5 on Fashion-MNIST (quick: synthetic)" in text
    assert "4.00×" in text and "acc@2" in text  # the loops' table
    assert "cnnlab's resident dataset: 1.031× its raw uint8 size" in text
    assert "naive: RSS growth after epoch 1: +1.2 MB" in text
    assert "cnnlab: one-time CUDA-graph capture 0.50 s (not in the epoch times)" in text
    assert "naive: one-time" not in text
    assert "cnnlab epoch time against batch size" in text and "40,000" in text
    assert "cnnlab epoch time against dataset size" in text and "30,000" in text
    assert "AlexNet, synthetic 224² batches of 16 — cpu" in text
    assert "train 1.25×, infer 1.50× torchvision" in text and "not registered" in text
    assert "graph train" not in text  # no CUDA-graph columns when nothing was graphed
    assert f"saved {out} (42 s)" in text
    assert json.loads(out.read_text())["wall_seconds"] == 42.0


def test_plain_bench_without_scaling_or_alexnet_prints_neither(plain_bench, capsys, monkeypatch):
    seen, out = plain_bench
    monkeypatch.setattr(
        bench, "run_bench", lambda **kw: made_up_result() | {"scaling": {}, "alexnet": None}
    )
    assert main(["bench", "--plain", "--epochs", "3", "--no-alexnet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "LeNet-5 on Fashion-MNIST" in text and "quick" not in text
    assert "epoch time against" not in text and "AlexNet" not in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fractions", "0.5,2"], "--fractions must lie in (0, 1]"),
        (["--batch-sizes", "64,x"], "--batch-sizes must be a comma list of numbers"),
        (["--epochs", "0"], "--epochs must be ≥ 1"),
    ],
)
def test_plain_bench_bad_numbers_are_one_line(plain_bench, capsys, flags, message):
    seen, _ = plain_bench
    assert main(["bench", "--plain", *flags]) == 2
    assert message in capsys.readouterr().err and not seen  # refused before any timing
