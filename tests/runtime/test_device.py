"""The speed levers keep results exact: pool-before-activation, channels_last, CUDA guards."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.config import Config, TrainConfig, apply_overrides
from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.runtime.device import make_runtime, pool_before_activation
from cnnlab.train.validate import validate


@pytest.mark.parametrize("name", ["lenet5", "lenet5-1998"])
@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
def test_pool_before_activation_is_exact(name, act):
    torch.manual_seed(0)
    kw = {"activation": act} if name == "lenet5" else {}
    size = 28 if name == "lenet5" else 32
    a = create_model(name, in_channels=1, num_classes=10, input_size=size, **kw)
    b = copy.deepcopy(a)
    n = pool_before_activation(b)
    # the article's LeNet-5 max-pools after both conv activations; 1998's uses avg-pool
    assert n == (2 if name == "lenet5" else 0)
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(16, 1, size, size)
    y = torch.randint(0, 10, (16,))
    for m in (a, b):
        nn.functional.cross_entropy(m(x), y).backward()
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    for (k, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-6, atol=1e-7, msg=k)


def test_pool_before_activation_leaves_non_monotonic_alone():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.MaxPool2d(2), nn.ReLU(inplace=True))
    m2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AvgPool2d(2))
    assert pool_before_activation(m) == 0 and isinstance(m[1], nn.GELU)
    assert pool_before_activation(m2) == 0


def test_runtime_cpu_defaults():
    rt = make_runtime(TrainConfig(device="cpu"))
    # NCHW on the CPU (measured faster there); channels_last only when asked for
    assert not rt.channels_last and not rt.cuda_graph and rt.amp_dtype is None
    assert "channels_last" not in rt.describe()
    on = make_runtime(TrainConfig(device="cpu", channels_last="true"))
    assert on.channels_last and "channels_last" in on.describe()
    # CUDA graphs are never turned on without CUDA, even when asked for
    assert not make_runtime(TrainConfig(device="cpu", cuda_graph="true")).cuda_graph


def test_cuda_graph_value_is_validated():
    cfg = apply_overrides(Config(), ["train.cuda_graph=sometimes"])
    with pytest.raises(ConfigError, match="cuda_graph"):
        validate(cfg)


def test_channels_last_training_matches_contiguous(tmp_path):
    common = [
        "data.name=synthetic",
        "data.num_train=128",
        "data.num_test=64",
        "train.batch_size=32",
        "train.device=cpu",
        "data.augment=crop,flip",
    ]
    runs = {}
    for cl in ("true", "false"):
        runs[cl] = cnnlab.fit(
            overrides=common + [f"train.channels_last={cl}"],
            epochs=1,
            runs_dir=str(tmp_path),
            name=f"cl-{cl}",
            quiet=True,
        )
    a, b = runs["true"].final, runs["false"].final
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1 / 64)


@pytest.mark.gpu
def test_cuda_graph_training_runs(tmp_path):
    res = cnnlab.fit(
        overrides=["data.name=synthetic", "train.batch_size=64", "train.device=cuda"],
        epochs=2,
        runs_dir=str(tmp_path),
        name="g",
        quiet=True,
    )
    assert res.final["test_acc"] > 0.3


def test_default_threads_take_every_available_core_whatever_the_load(monkeypatch):
    from cnnlab.runtime import device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (30.0, 30.0, 30.0))
    monkeypatch.setattr(device, "measured_speedup", lambda n: 2.5)  # idle cores
    assert device.default_threads() == 3
    seen = []
    monkeypatch.setattr(device.torch, "set_num_threads", seen.append)
    rt = make_runtime(TrainConfig(device="cpu"))
    assert seen == [3] and "all 3 available cores" in rt.describe()
    rt = make_runtime(TrainConfig(device="cpu", threads=1))
    assert seen == [3, 1] and "train.threads" in rt.describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    rt = make_runtime(TrainConfig(device="cpu"))
    assert seen == [3, 1, 2] and "OMP_NUM_THREADS" in rt.describe()


def test_the_default_thread_count_never_follows_the_load(monkeypatch):
    """The default takes every available core and measures nothing, so the same command
    computes with the same thread count (and reduction order) however busy the machine
    is; only train.threads=auto-measure measures, and says so."""
    from cnnlab.runtime import device

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(device, "_MEASURED", {})
    monkeypatch.setattr(device, "threads_pay", lambda n: pytest.fail("measured"))
    for t in (TrainConfig(device="cpu"), TrainConfig(device="cpu", deterministic=True)):
        assert device.choose_threads(t) == (2, "all 2 available cores; set train.threads to change")
    monkeypatch.setattr(device, "threads_pay", lambda n: 0.3)
    n, why = device.choose_threads(TrainConfig(device="cpu", threads="auto-measure"))
    assert n == 1 and "auto-measure: 2 threads ran at 0.3×" in why and "follow" in why
    monkeypatch.setattr(device, "threads_pay", lambda n: pytest.fail("measured again"))
    assert device.choose_threads(TrainConfig(threads="auto-measure"))[0] == 1  # for a minute
    monkeypatch.setattr(device, "_MEASURED", {})
    monkeypatch.setattr(device, "threads_pay", lambda n: 1.8)
    assert device.choose_threads(TrainConfig(threads="auto-measure"))[0] == 2


def test_threads_pay_is_a_quick_ratio_and_restores_the_thread_count():
    from cnnlab.runtime import device

    torch.set_num_threads(1)
    torch.manual_seed(0)
    r = device.threads_pay(2, rounds=2)
    assert r > 0 and torch.get_num_threads() == 1
    # the run's seeded global generator is left where it was (same initial weights)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_fast_precision_is_bf16_only_where_native(monkeypatch):
    from cnnlab.runtime import device

    monkeypatch.setattr(device, "native_bf16", lambda dev: True)
    t = TrainConfig(device="cpu", precision="fast")
    rt = make_runtime(t)
    assert rt.amp_dtype is torch.bfloat16
    # ... but not for a small model, where bf16 only adds casts
    device.settle_precision(rt, t, create_model("lenet5"))
    assert rt.amp_dtype is None
    monkeypatch.setattr(device, "native_bf16", lambda dev: False)
    assert make_runtime(TrainConfig(device="cpu", precision="fast")).amp_dtype is None
    assert make_runtime(TrainConfig(device="cpu")).amp_dtype is None  # auto stays fp32 on CPU
