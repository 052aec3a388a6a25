"""`cnnlab bench --quick` runs end to end and writes its JSON; the pieces behave."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.studies import bench, loops, references, throughput, timing

SRC = str(Path(bench.__file__).resolve().parents[2])  # the src/ folder this cnnlab is in


def test_time_to_and_summary():
    ep = [
        {
            "seconds": 2.0,
            "cpu_seconds": 2.0,
            "test_acc": 0.85,
            "images": 100,
            "rss_mb": 10.0,
            "peak_rss_mb": 10.0,
            "gpu_peak_mb": None,
        },
        {
            "seconds": 1.0,
            "cpu_seconds": 1.0,
            "test_acc": 0.905,
            "images": 100,
            "rss_mb": 11.0,
            "peak_rss_mb": 11.0,
            "gpu_peak_mb": None,
        },
        {
            "seconds": 1.5,
            "cpu_seconds": 1.5,
            "test_acc": 0.912,
            "images": 100,
            "rss_mb": 11.0,
            "peak_rss_mb": 11.0,
            "gpu_peak_mb": None,
        },
    ]
    assert timing.time_to(ep, 0.90) == pytest.approx(3.0)
    assert timing.time_to(ep, 0.91) == pytest.approx(4.5)
    assert timing.time_to(ep, 0.95) is None
    s = timing.summarize(ep)
    assert s["median_s_per_epoch"] == pytest.approx(1.5)
    assert s["images_per_s"] == pytest.approx(100 / 1.5)
    assert s["rss_growth_mb"] == pytest.approx(0.0)


def _epoch(epoch, seconds, acc, wall):
    return {"epoch": epoch, "seconds": seconds, "test_acc": acc, "wall": wall}


def test_time_to_accuracy_counts_wall_from_launch_and_training_apart():
    ths = (0.90, 0.91, 0.925)
    # start-up 3 s, 2 s of evaluation per epoch: the wall clock runs ahead of training time
    run = [_epoch(1, 2.0, 0.88, 7.0), _epoch(2, 2.0, 0.912, 11.0), _epoch(3, 1.0, 0.905, 14.0)]
    assert timing.wall_to(run, 0.90) == 11.0  # the first epoch at ≥ 90 %, not a later one
    assert timing.wall_to(run, 0.91) == 11.0
    assert timing.wall_to(run, 0.925) is None
    s = timing.tta_summary(run, ths)
    assert s["to"]["0.9"] == {"wall": 11.0, "train": 4.0}
    assert s["to"]["0.925"] == {"wall": None, "train": None}
    assert s["median_s_per_epoch"] == 2.0 and "best_acc" not in s and s["final_acc"] == 0.905
    # a second seed reaches 92.5 %: the aggregate says 1 of 2 seeds, medians over the rest
    run2 = [_epoch(1, 1.0, 0.91, 4.0), _epoch(2, 1.0, 0.93, 6.0)]
    runs = [{"summary": s}, {"summary": timing.tta_summary(run2, ths)}]
    agg = timing.aggregate(runs, ths)
    assert agg["to"]["0.9"] == {"reached": 2, "wall": 7.5, "train": 2.5}
    assert agg["to"]["0.925"] == {"reached": 1, "wall": 6.0, "train": 2.0}
    assert agg["seeds"] == 2 and agg["epochs"] == 3


def test_time_to_accuracy_table_and_epoch_ratios():
    ths = (0.90, 0.925)

    def loop(sec, accs):
        ep = [_epoch(i + 1, sec, a, 5.0 + (i + 1) * sec) for i, a in enumerate(accs)]
        runs = [{"summary": timing.tta_summary(ep, ths)}]
        return {"runs": runs, "summary": timing.aggregate(runs, ths)}

    loops = {"cnnlab": loop(2.0, [0.91, 0.93]), "naive": loop(8.0, [0.89, 0.905, 0.91])}
    entry = {"thresholds": list(ths), "loops": loops}
    rows, header = bench.tta_rows(entry)
    assert header == ["loop", "s/epoch", "→ 90 %", "→ 92.5 %", "final test acc", "epochs"]
    assert [r[0] for r in rows] == ["cnnlab", "naive"]
    assert [r[-2] for r in rows] == ["0.9300", "0.9100"]  # the last epoch, never a max
    assert rows[0][2:4] == ["7 s (2 s)", "9 s (4 s)"]
    assert rows[1][2:4] == ["21 s (16 s)", "not in 3 ep"]
    assert timing.epoch_ratios(loops) == {"naive": pytest.approx(4.0)}


def test_train_argv_is_what_a_user_types():
    fm, ms = bench.TARGETS["fashion-mnist"], bench.TARGETS["mnist-sample"]
    argv = bench.train_argv(fm, 1, None, "auto", 0, ["train.batch_size=128"], "/d")
    assert argv == ["--recipe", "lenet5-fashion-mnist", "--data-dir", "/d", "--seed", "1",
                    "--set", "train.batch_size=128"]  # fmt: skip
    fast = bench.train_argv(bench.TARGETS["fashion-mnist-fast"], 0, None, "auto", 0, (), "/d")
    assert fast[:2] == ["--recipe", "lenet5-fashion-mnist-fast"]
    assert bench.train_argv(ms, 0, 3, "cpu", 2, (), "/d") == [
        "--seed", "0", "--epochs", "3", "--device", "cpu", "--set", "train.threads=2",
    ]  # fmt: skip


@pytest.mark.slow
def test_bench_time_to_accuracy_quick_end_to_end(tmp_path):
    out = tmp_path / "t.json"
    cmd = [sys.executable, "-m", "cnnlab", "bench", "--quick", "--threads", "1", "--out", str(out)]
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["kind"] == "speed-tta" and r["tiny"] and r["seeds"] == [0]
    assert r["command"].startswith("cnnlab bench --quick") and r["commit"]
    entry = r["targets"]["fashion-mnist"]
    assert set(entry["loops"]) == {"cnnlab", "naive", "resident"}
    for v in entry["loops"].values():
        (run,) = v["runs"]
        ep = run["epochs"]
        assert len(ep) == 1 and 0 < ep[0]["seconds"] < ep[0]["wall"] <= run["wall_seconds"]
        assert run["load_before"] is not None
    assert set(entry["epoch_ratios"]) == {"naive", "resident"}
    assert "Time to accuracy" in p.stdout and f"saved {out}" in p.stdout


def test_tiny_fashion_files_load_in_both_worlds(tmp_path):
    from cnnlab.data.datasets import load_dataset

    d = loops.write_tiny_fashion(tmp_path, 64, 32)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert ds.train_x.shape == (64, 1, 28, 28) and ds.test_y.shape == (32,)
    root = references.torchvision_root(d, tmp_path / "tv")
    import torchvision

    tv = torchvision.datasets.FashionMNIST(root, train=True, download=False)
    assert torch.equal(tv.data, ds.train_x[:, 0])
    assert torch.equal(tv.targets, ds.train_y)


def test_reference_lenet_matches_cnnlab_lenet():
    from cnnlab.models import count_params, create_model

    ours = create_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    assert count_params(references.LeNet5()) == count_params(ours)


@pytest.mark.slow  # tens of seconds: `make test-slow`
def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "b.json"
    cmd = [
        sys.executable,
        "-m",
        "cnnlab",
        "bench",
        "--plain",
        "--quick",
        "--threads",
        "1",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-sizes",
        "64",
        "--fractions",
        "1",
        "--no-alexnet",
    ]
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["loops"]) == {"naive", "resident", "cnnlab"}
    for loop in r["loops"].values():
        s = loop["summary"]
        assert s["epochs"] == 1 and s["median_s_per_epoch"] > 0 and 0 <= s["test_acc"] <= 1
        assert s["peak_rss_mb"] > 0
    assert set(r["ratios"]) == {"naive", "resident"}
    assert r["resident_memory_ratio"] < 1.1
    assert r["scaling"]["by_batch_size"][0]["batch_size"] == 64
    assert "resident" in p.stdout and f"saved {out}" in p.stdout


def test_alexnet_throughput_skips_unregistered():
    r = throughput.alexnet_throughput(
        "cpu", batch=2, steps=1, size=64, names=("no-such-alexnet", "torchvision.models.alexnet")
    )
    assert "skipped" in r["models"]["no-such-alexnet"]
    tv = r["models"]["torchvision.models.alexnet"]
    assert tv["train_images_per_s"] > 0 and tv["infer_images_per_s"] > 0


def test_bench_bad_loop_is_one_line(tmp_path):
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, "-m", "cnnlab", "bench", "--quick", "--loops", "fast"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2
    assert "unknown loop" in p.stderr and "Traceback" not in p.stderr


def test_graphed_is_fn_itself_on_cpu():
    calls = []

    def step():
        calls.append(1)

    fn = throughput.graphed(step, torch.device("cpu"))
    assert fn is step  # no capture, no warm-up calls off CUDA
    assert calls == []


@pytest.mark.gpu
def test_graphed_train_step_matches_eager():
    """graphed() = 3 eager warm-up steps + a capture; 2 replays then make 5 steps, the same
    weights as 5 eager steps (replays overwrite the grads, they do not accumulate them)."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).to(dev)
    b = copy.deepcopy(a)
    x, y = torch.randn(16, 8, device=dev), torch.randint(0, 3, (16,), device=dev)

    def stepper(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

        return step

    sa = stepper(a)
    for _ in range(5):
        sa()
    replay = throughput.graphed(stepper(b), dev)
    replay()
    replay()
    torch.cuda.synchronize()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
