"""The Trainer's one update (train.optim.OptimizerStep): backward, clipping, fp16 loss
scaling, the NaN skip and the step, for every Task alike."""

import pytest
import torch

import cnnlab
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.train.optim import OptimizerStep


def net_and_loss(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    return net, lambda: torch.nn.functional.cross_entropy(net(x), y)


def stepped(stepper, lr=0.1, steps=3):
    net, loss = net_and_loss()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        stepper(loss(), opt, net.parameters())
    return net, opt


def test_a_plain_step_is_zero_grad_backward_step():
    net, loss = net_and_loss()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        opt.step()
    got, _ = stepped(OptimizerStep())
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), got.parameters(), strict=True))


def test_clipping_bounds_the_gradient_norm_of_the_given_params():
    net, loss = net_and_loss()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    before = [p.detach().clone() for p in net.parameters()]
    OptimizerStep(clip=1e-3)(loss(), opt, net.parameters())
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, net.parameters())])
    assert moved.norm() == pytest.approx(1e-3, rel=1e-4)  # lr 1 × the clipped gradient


def test_loss_scaling_gives_the_unscaled_update_and_skips_overflow():
    plain, _ = stepped(OptimizerStep(clip=0.5))
    scaled = OptimizerStep(clip=0.5, fp16=True)  # a GradScaler on the parameters' device
    got, opt = stepped(scaled)
    for a, b in zip(plain.parameters(), got.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    scale = scaled.scaler(opt).get_scale()
    w = [p.detach().clone() for p in got.parameters()]
    inf = sum(p.sum() for p in got.parameters()) * float("inf")
    scaled(inf, opt, got.parameters())  # an overflowing step: skipped, scale halved
    assert all(torch.equal(a, b) for a, b in zip(w, got.parameters(), strict=True))
    assert scaled.scaler(opt).get_scale() == scale / 2
    # its state travels in a checkpoint (JSON) and comes back
    again = OptimizerStep(fp16=True)
    again.load_state([opt], scaled.state([opt]))
    assert again.scaler(opt).get_scale() == scale / 2


def test_nan_skip_leaves_the_weights_and_says_so():
    net, loss = net_and_loss()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    w = [p.detach().clone() for p in net.parameters()]
    st = OptimizerStep(skip_nonfinite=True)
    st(loss() * float("nan"), opt, net.parameters())
    assert st.skipped and all(torch.equal(a, b) for a, b in zip(w, net.parameters()))


def test_every_task_steps_through_the_trainer(tmp_path, monkeypatch):
    """One update for every Task: a GAN's two networks and a classifier both go through
    Trainer.step_optimizer (counted), and checkpoints record the numerics and scalers."""
    from cnnlab.train.trainer import Trainer

    calls = []
    real = Trainer.step_optimizer
    monkeypatch.setattr(
        Trainer, "step_optimizer", lambda self, *a, **k: (calls.append(a[1]), real(self, *a, **k))
    )
    common = ["data.name=synthetic", "data.num_train=64", "data.num_test=32",
              "train.batch_size=32", "train.device=cpu"]  # fmt: skip
    gan = common + ["model.name=dcgan", "gan.width=8", "gan.z_dim=8", "gan.eval_samples=32"]
    res = cnnlab.fit(recipe="dcgan", overrides=gan, epochs=1, runs_dir=str(tmp_path), quiet=True)
    assert len(calls) == 4 and len({id(o) for o in calls}) == 2  # 2 steps × (D, G)
    ck = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors")
    assert ck.meta["numerics"]["device"] == "cpu" and ck.meta["scalers"] == [None, None]
    calls.clear()
    cnnlab.fit(overrides=common, epochs=1, runs_dir=str(tmp_path), quiet=True)
    assert len(calls) >= 1 and len({id(o) for o in calls}) == 1
