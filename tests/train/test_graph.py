"""The whole-step CUDA graph path (train/graph.py): on CPU the same device-state step runs
eagerly, so these tests check it computes exactly what the ordinary loop computes; the
capture itself is checked where CUDA exists."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.train.api import build_config
from cnnlab.train.callbacks import Callback
from cnnlab.train.trainer import Trainer
from cnnlab.train.whole_step import WholeStep

BASE = [
    "data.name=synthetic",
    "data.num_train=224",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "data.augment=crop,flip",
    "train.report=false",
    "train.diagnostics=false",
    # pinned: by default the thread count follows the machine's load, which can change
    # between the two runs a parity test compares (and with it the CPU's reduction order)
    "train.threads=1",
]


def epochs(tmp_path, mode, *extra, device="cpu", n=2):
    cfg = build_config(
        None,
        None,
        BASE
        + [f"train.device={device}", f"train.cuda_graph={mode}", f"run.runs_dir={tmp_path}"]
        + list(extra),
    )
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    hist = [tr.train_epoch(e) for e in range(1, n + 1)]
    return tr, hist


def same(ha, hb):
    keys = ("train_loss", "train_acc", "lr")
    return [[m[k] for k in keys] for m in ha] == [[m[k] for k in keys] for m in hb]


@pytest.mark.parametrize(
    "extra",
    [
        ["optim.name=adam", "sched.name=onecycle"],
        ["optim.name=sgd", "optim.momentum=0.9", "sched.name=cosine", "model.batch_norm=both"],
        ["optim.name=adamw", "train.grad_clip=0.5", "train.label_smoothing=0.1"],
    ],
    ids=["adam-onecycle", "sgd-bn-cosine", "adamw-clip-smoothing"],
)
def test_whole_step_matches_the_ordinary_loop_exactly(tmp_path, extra):
    a, ha = epochs(tmp_path / "a", "false", *extra)
    b, hb = epochs(tmp_path / "b", "step", *extra)
    assert a.task.whole is None and isinstance(b.task.whole, WholeStep)
    assert same(ha, hb)
    for (k, pa), pb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), k
    # the per-step loss buffer (used to name the first non-finite step) is filled too
    assert torch.equal(a._losses, b._losses) and bool((b._losses > 0).all())
    assert b.task.whole.counter.item() == b.steps_per_epoch


def test_whole_step_falls_back_where_it_cannot_run(tmp_path, capsys):
    tr, hist = epochs(tmp_path, "step", "optim.name=adagrad", n=1)
    assert tr.task.whole is None and hist[0]["train_loss"] > 0
    assert "whole-step CUDA graph off (optimizer Adagrad" in capsys.readouterr().err
    tr, _ = epochs(tmp_path, "step", "train.nan_policy=skip", n=1)
    assert tr.task.whole is None
    tr, _ = epochs(tmp_path, "auto", n=1)  # auto: graphs on CUDA only
    assert tr.task.whole is None


def test_bad_cuda_graph_value_is_one_clear_error():
    from cnnlab.errors import ConfigError
    from cnnlab.train.validate import validate

    with pytest.raises(ConfigError, match="cuda_graph value"):
        validate(build_config(None, None, ["train.cuda_graph=sometimes"]))


class SignalAt(Callback):
    def __init__(self, epoch, step):
        self.at, self.epoch = (epoch, step), 0

    def on_epoch_start(self, trainer, epoch):
        self.epoch = epoch

    def on_step(self, trainer, step, loss):
        if (self.epoch, step) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_whole_step_stops_mid_epoch_and_resumes_exactly(tmp_path):
    over = BASE + ["train.device=cpu", "train.cuda_graph=step", "train.checkpoint_every_steps=3"]

    def run(name=None, resume=None, callbacks=None):
        return cnnlab.fit(
            overrides=over, epochs=2, name=name, runs_dir=str(tmp_path), quiet=True,
            resume=resume, callbacks=callbacks,
        )  # fmt: skip

    full = run("full")
    part = run("part", callbacks=[SignalAt(2, 4)])
    assert part.interrupted
    pos = load_checkpoint(part.run_dir / "checkpoints" / "last.safetensors").meta["position"]
    assert (pos["epoch"], pos["step"]) == (2, 4)
    res = run(resume=part.run_dir)
    wa = load_checkpoint(full.run_dir / "checkpoints" / "last.safetensors").model_state
    wb = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors").model_state
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert res.history[-1]["train_loss"] == full.history[-1]["train_loss"]


def test_checkpoint_stores_a_tensor_lr_as_a_plain_float(tmp_path):
    from cnnlab.runs.checkpoint import optim_split

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=1e-3)
    opt.param_groups[0]["lr"] = torch.tensor(2e-3)
    opt.param_groups[0]["capturable"] = True
    _, meta = optim_split(opt.state_dict())
    g = json.loads(json.dumps(meta))["param_groups"][0]  # JSON-serialisable
    assert g["lr"] == pytest.approx(2e-3) and g["capturable"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_whole_step_graph_trains_like_eager(tmp_path):
    a, ha = epochs(tmp_path / "a", "false", "train.precision=fp32", device="cuda", n=3)
    b, hb = epochs(tmp_path / "b", "step", "train.precision=fp32", device="cuda", n=3)
    assert b.task.whole.graph is not None and b.task.capture_seconds > 0
    # the graph draws its augmentation from graph-safe RNG offsets: not bitwise, but the
    # same training — losses close and the model learns
    assert hb[-1]["train_loss"] < hb[0]["train_loss"]
    assert abs(hb[-1]["train_acc"] - ha[-1]["train_acc"]) < 0.15


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3),
    ).eval()  # fmt: skip


def test_graphed_forward_on_cpu_is_the_eager_forward():
    from cnnlab.runtime.graphs import GraphedForward

    m = _small_net()
    x = torch.randn(5, 1, 8, 8)
    fwd = GraphedForward(m)
    assert torch.equal(fwd(x), m(x)) and fwd.graphs == {}
    assert fwd.buffer(x) is x


def test_evaluation_uses_the_eager_forward_off_cuda(tmp_path):
    tr, _ = epochs(tmp_path, "step", n=1)
    x = torch.randn(3, 1, 28, 28)
    tr.model.eval()
    assert torch.equal(tr.task.forward_for(tr.model)(x), tr.model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_forward_replays_and_recaptures_where_it_must():
    from cnnlab.runtime.graphs import GraphedForward

    m = _small_net().cuda()
    fwd = GraphedForward(m, max_graphs=2)
    x = torch.randn(5, 1, 8, 8, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fwd(x).clone(), m(x))
        assert len(fwd.graphs) == 1
        x2 = torch.randn(5, 1, 8, 8, device="cuda")  # same shape: a replay on new data
        torch.testing.assert_close(fwd(x2).clone(), m(x2))
        m[0].weight.mul_(2)  # in-place weight change: the graph reads the new weights
        torch.testing.assert_close(fwd(x2).clone(), m(x2))
        assert len(fwd.graphs) == 1
        m[4].weight = torch.nn.Parameter(m[4].weight.detach().clone() + 1)  # new memory
        torch.testing.assert_close(fwd(x2).clone(), m(x2))
        assert len(fwd.graphs) == 2
        buf = fwd.buffer(x2)  # the static input: calls on it replay without a copy
        assert buf.data_ptr() != x2.data_ptr() and torch.equal(buf, x2)
        buf.copy_(x)
        torch.testing.assert_close(fwd(buf).clone(), m(x))
        assert len(fwd.graphs) == 2
        x3 = torch.randn(7, 1, 8, 8, device="cuda")  # a third key: over max_graphs, eager
        torch.testing.assert_close(fwd(x3), m(x3))
        assert len(fwd.graphs) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_evaluation_matches_eager_evaluation(tmp_path):
    a, _ = epochs(tmp_path / "a", "false", device="cuda", n=1)
    b, _ = epochs(tmp_path / "b", "step", device="cuda", n=1)
    assert b.rt.cuda_graph and b.task.forward_for(b.model).__class__.__name__ == "GraphedForward"
    assert b.task.forward_for(b.model).enabled and not a.task.forward_for(a.model).enabled
    la, aa = a.task.eval_loader(a.task.test_loader)[:2]
    b.model.load_state_dict(a.model.state_dict())  # same weights: same numbers
    lb, ab = b.task.eval_loader(b.task.test_loader)[:2]
    assert ab == aa and lb == pytest.approx(la, rel=1e-4)
