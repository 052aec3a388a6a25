"""DDP under torchrun: 2 CPU processes (gloo) match a 1-process run with the same global
batch. Not bit-exact: the gradient all-reduce and the metric sums add in another order,
so weights agree to ~1e-5 after a few steps (measured max |Δ| 6e-6 after 8 Adam steps)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.runtime.distributed import Dist, from_env

SETS = [
    "data.name=synthetic",
    # 28 to the validation split, 256 to train. Adam turns the all-reduce's rounding
    # into ±lr moves of weights whose gradient is nearly zero; on some sets (230 training
    # images: max |Δw| 6e-3, with SGD 2.5e-6) that breaks a tight tolerance. This set has no
    # such weight (docs/scale-out.md, "How close data-parallel comes to one process").
    "data.num_train=284",
    "data.num_test=64",
    "train.batch_size=64",  # the global batch: 32 per rank
    "train.eval_batch_size=64",
    "data.augment=none",  # augmentation draws per rank differ from one process's
    "train.checkpoint_every_steps=3",
]
SRC = str(Path(cnnlab.__file__).resolve().parents[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_processes_match_one(tmp_path):
    one = cnnlab.fit(
        overrides=SETS, device="cpu", epochs=2, runs_dir=str(tmp_path), name="one", quiet=True
    )
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "cnnlab", "train", "--nproc", "2", "--device", "cpu"]
    argv += sum((["--set", s] for s in SETS), [])
    argv += ["--epochs", "2", "--runs-dir", str(tmp_path), "--name", "two"]
    argv += ["--report-to", "tensorboard"]  # rank 0 only
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "DDP 2 ranks (gloo)" in p.stdout
    assert p.stdout.count("run directory:") == 1  # only rank 0 reports
    assert "Grad strides do not match" not in p.stderr
    two = tmp_path / "two"
    a = load_checkpoint(one.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(two / "checkpoints" / "last.safetensors").model_state
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4)
    ra, rb = read_metrics(one.run_dir), read_metrics(two)
    assert [m["epoch"] for m in rb] == [1, 2]  # one line per epoch: only rank 0 writes
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one writer
    acc = EventAccumulator(str(two / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("test_loss")] == [
        (m["epoch"], pytest.approx(m["test_loss"], rel=1e-6)) for m in rb
    ]
    for x, y in zip(ra, rb, strict=True):
        for k in ("train_loss", "test_loss"):
            assert y[k] == pytest.approx(x[k], rel=1e-5), k
        for k in ("train_acc", "test_acc"):  # counts: equal unless a logit tie flips
            assert abs(y[k] - x[k]) <= 1 / 64, k


def test_single_process_env_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d, dev = from_env(torch.device("cpu"))
    assert d == Dist() and not d.enabled and d.main and dev.type == "cpu"
    t = torch.ones(2)
    assert d.all_reduce(t) is t and d.broadcast("x") == "x"


def test_sharded_loader_covers_each_global_batch_once():
    from cnnlab.data.loader import ResidentLoader

    x = torch.arange(24, dtype=torch.uint8).reshape(24, 1, 1, 1)
    y = torch.arange(24)
    parts = []
    for r in range(2):
        g = torch.Generator().manual_seed(0)
        ld = ResidentLoader(x, y, 8, 0.0, 1.0, shuffle=True, drop_last=True, generator=g)
        ld.shard(r, 2)
        parts.append([yb for _, yb in ld])
    g = torch.Generator().manual_seed(0)
    whole = [yb for _, yb in ResidentLoader(x, y, 8, 0.0, 1.0, shuffle=True, generator=g)]
    for step, full in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][step], parts[1][step]]), full)
    with pytest.raises(ValueError, match="divisible"):
        ResidentLoader(x, y, 7, 0.0, 1.0).shard(0, 2)


def test_ranks_draw_distinct_augmentations_and_a_resumed_epoch_redraws_them():
    """Sharded, each rank augments with its own stream (one image repeated: any difference
    between the ranks' batches is augmentation), and replaying an epoch from a step (a
    resume) gives the same batches; the shared generator stays in step across ranks."""
    from cnnlab.data.loader import ResidentLoader

    x = torch.randint(0, 255, (1, 1, 12, 12), dtype=torch.uint8).expand(32, 1, 12, 12).clone()
    y = torch.zeros(32, dtype=torch.long)

    def loader(rank):
        g = torch.Generator().manual_seed(0)
        ld = ResidentLoader(x, y, 16, 0.5, 0.25, shuffle=True, drop_last=True,
                            augment=("crop", "flip", "noise"), pad=2, generator=g)  # fmt: skip
        ld.shard(rank, 2)
        return ld, g

    (l0, g0), (l1, g1) = loader(0), loader(1)
    b0, b1 = [xb for xb, _ in l0], [xb for xb, _ in l1]
    assert len(b0) == len(b1) == 2
    for a, b in zip(b0, b1, strict=True):
        assert not torch.equal(a, b)  # the two halves of a global batch differ
    assert torch.equal(g0.get_state(), g1.get_state())  # next epoch: the same permutation
    # a resumed epoch: the saved permutation and the step reached
    ld, g = loader(1)
    order = ld.order()
    full = [xb for xb, _ in ld.iterate(order=order)]
    again = [xb for xb, _ in ld.iterate(start_step=1, order=order)]
    assert torch.equal(full[1], again[0])
    # one process (world 1) draws from the shared generator as before
    g = torch.Generator().manual_seed(0)
    one = ResidentLoader(x, y, 16, 0.5, 0.25, shuffle=True, augment=("flip",), generator=g)
    next(iter(one))
    assert one.rank_generator is None


def test_die_with_parent_signals_this_process_when_the_parent_is_gone(monkeypatch):
    import signal

    from cnnlab.runtime import distributed

    sent = []
    monkeypatch.setattr(distributed.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    if distributed._PRCTL is None:
        pytest.skip("prctl: Linux only")
    assert distributed.die_with_parent(signal.SIGTERM)  # the parent is alive: nothing sent
    assert sent == []
    assert distributed.die_with_parent(signal.SIGTERM, parent=-1)  # "already dead"
    assert sent == [(os.getpid(), signal.SIGTERM)]
    distributed._PRCTL(distributed.PR_SET_PDEATHSIG, 0, 0, 0, 0)  # this test process: undo


def test_a_lost_peer_is_one_line_not_a_traceback(capsys):
    from cnnlab.runtime import distributed

    seen = []
    hook = distributed._lost_peer_hook(lambda *a: seen.append(a), rank=1)
    e = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"
    )
    hook(RuntimeError, e, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnlab: error: rank 1 lost contact")
    assert "--resume" in err[0] and not seen
    hook(ValueError, ValueError("x"), None)  # anything else: the usual hook
    assert seen and seen[0][0] is ValueError


# the embedded default (mnist-sample), cut small: 256 training images, global batch 64
NODE_SETS = [
    "data.train_limit=256",
    "train.batch_size=64",
    "train.eval_batch_size=250",
    "data.augment=none",
    "train.checkpoint_every_steps=2",
    "train.threads=1",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(cwd: Path, port: int, args: list[str], env=None):
    """One "node": ``torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d`` in its own
    session (so the whole node can be killed at once) and its own working directory."""
    cwd.mkdir(parents=True, exist_ok=True)
    e = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
           "--nproc-per-node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"rehearsal-{port}",
           "-m", "cnnlab", "train", "--device", "cpu", *args]  # fmt: skip
    return subprocess.Popen(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def two_nodes(tmp: Path, args: list[str], env=None, kill_second_when=None):
    import time

    port = free_port()
    a = start_node(tmp / "node-a", port, args, env)
    time.sleep(1.0)  # node a hosts the rendezvous store
    b = start_node(tmp / "node-b", port, args, env)
    if kill_second_when is not None:
        t = time.monotonic()
        while not kill_second_when() and time.monotonic() - t < 240:
            assert a.poll() is None and b.poll() is None, "the run ended before the kill"
            time.sleep(0.05)
        ranks = _children(b.pid)  # torchrun starts each rank in a session of its own
        assert ranks
        for pid in (b.pid, *ranks):  # the whole node at once: its torchrun and its rank
            os.kill(pid, 9)
    out = []
    for p in (a, b):
        o, e = p.communicate(timeout=300)
        out.append((p.returncode, o, e))
    return out


@pytest.mark.slow
def test_two_node_rehearsal_matches_one_process_and_survives_a_lost_node(tmp_path):
    import time

    t0 = time.monotonic()
    sets = sum((["--set", s] for s in NODE_SETS), [])
    one = cnnlab.fit(overrides=NODE_SETS, device="cpu", epochs=2, runs_dir=str(tmp_path),
                     name="one", quiet=True)  # fmt: skip
    # 1. two nodes, a relative run directory: each node's working directory shows what
    #    its rank wrote; rank 0 alone writes
    res = two_nodes(tmp_path, [*sets, "--epochs", "2", "--runs-dir", "runs", "--name", "two"])
    for rc, _, e in res:
        assert rc == 0, e[-3000:]
    writer = [n for n, (_, o, _) in zip(("node-a", "node-b"), res, strict=True)
              if "run directory:" in o]  # fmt: skip
    assert len(writer) == 1
    other = ({"node-a", "node-b"} - set(writer)).pop()
    assert not (tmp_path / other / "runs").exists()  # rank 1 wrote nothing
    run = tmp_path / writer[0] / "runs" / "two"
    a = load_checkpoint(one.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(run / "checkpoints" / "last.safetensors").model_state
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5)
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    assert len((run / "gradients.jsonl").read_text().splitlines()) == 2
    t1 = time.monotonic()
    # 2. a node dies mid-run (its torchrun and rank SIGKILLed): the other stops with one
    #    line, and both nodes resume the shared run directory to the end
    shared = tmp_path / "shared" / "lost"
    args = [*sets, "--epochs", "8", "--runs-dir", str(shared.parent), "--name", "lost"]
    slow = {"CNNLAB_FAULT_SLEEP": "0.3"}  # each checkpoint write takes 0.3 s: time to kill
    res = two_nodes(tmp_path, args, slow,
                    kill_second_when=lambda: len(read_metrics(shared)) >= 1
                    if (shared / "metrics.jsonl").is_file() else False)  # fmt: skip
    (rc_a, o_a, e_a), (rc_b, _, _) = res
    assert rc_b == -9 and rc_a != 0
    lines = [x for x in e_a.splitlines() if x.startswith("cnnlab: error:")]
    assert len(lines) == 1 and "lost contact" in lines[0] and "--resume" in lines[0], e_a[-3000:]
    assert "cnnlab/train" not in e_a and "cnnlab/runtime" not in e_a  # no traceback of ours
    load_checkpoint(shared / "checkpoints" / "last.safetensors")
    done = len(read_metrics(shared))
    assert 1 <= done < 8
    t2 = time.monotonic()
    res = two_nodes(tmp_path, ["--resume", str(shared)])
    for rc, _, e in res:
        assert rc == 0, e[-3000:]
    assert [m["epoch"] for m in read_metrics(shared)] == list(range(1, 9))
    print(
        f"two nodes: 2 epochs {t1 - t0:.0f} s (with the 1-process run), kill {t2 - t1:.0f} s, "
        f"resume {time.monotonic() - t2:.0f} s"
    )


def _children(pid: int) -> list[int]:
    from cnnlab.runtime.distributed import _children as kids

    return kids(pid)


@pytest.mark.slow
def test_kill_9_of_the_launcher_ends_torchrun_and_its_ranks(tmp_path):
    """`cnnlab train --nproc 2` SIGKILLed: torchrun gets SIGTERM from the kernel (it dies
    with its parent), its ranks stop as on Ctrl-C and leave a resumable run."""
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CNNLAB_FAULT_SLEEP="0.3")  # fmt: skip
    argv = [sys.executable, "-m", "cnnlab", "train", "--nproc", "2", "--device", "cpu",
            *sum((["--set", s] for s in NODE_SETS), []), "--epochs", "300",  # minutes
            "--runs-dir", str(tmp_path), "--name", "k"]  # fmt: skip
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "k"
    t = time.monotonic()
    while not (run / "checkpoints" / "last.safetensors").exists():
        assert p.poll() is None and time.monotonic() - t < 240, p.stderr.read()[-2000:]
        time.sleep(0.05)
    torchrun = _children(p.pid)
    ranks = [r for tr in torchrun for r in _children(tr)]
    assert len(torchrun) == 1 and len(ranks) == 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t = time.monotonic()
    alive = [*torchrun, *ranks]
    while alive and time.monotonic() - t < 60:  # far less than the run would still take
        time.sleep(0.2)
        alive = [q for q in alive if Path(f"/proc/{q}").exists()
                 and "zombie" not in Path(f"/proc/{q}/status").read_text().lower()]  # fmt: skip
    assert not alive, f"still running after the launcher's SIGKILL: {alive}"
    ck = load_checkpoint(run / "checkpoints" / "last.safetensors")  # resumable
    assert ck is not None and len(read_metrics(run)) < 300
