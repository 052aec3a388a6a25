"""Per-epoch snapshots of the first layers (the explore page's epoch slider)."""

import torch

import cnnlab
from cnnlab.models import create_model
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.snapshots import read_snapshots, snapshot_file
from cnnlab.train.snapshots import first_layers


def test_first_layers_keep_the_first_two_convs_of_lenet5():
    keys = first_layers(create_model("lenet5", in_channels=1, num_classes=10, input_size=28))
    assert keys == ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    bn = create_model("lenet5", in_channels=1, num_classes=10, input_size=28, batch_norm="conv")
    keys = first_layers(bn)
    assert "features.1.running_mean" in keys and "features.4.weight" in keys  # BN after conv2
    assert not any(k.endswith("num_batches_tracked") for k in keys)


def test_a_large_second_conv_is_left_out():
    m = create_model("alexnet-cifar", in_channels=3, num_classes=10, input_size=32, hidden=64)
    keys = first_layers(m)
    assert "features.0.weight" in keys and "features.4.weight" not in keys
    size = sum(m.state_dict()[k].numel() for k in keys)
    assert size < 5000  # conv1 (1,792) and its batch norm: a few KB


def test_training_writes_one_small_snapshot_per_epoch(tmp_path):
    res = cnnlab.fit(
        overrides=[
            "data.name=synthetic",
            "data.num_train=96",
            "data.num_test=16",
            "train.batch_size=32",
            "train.device=cpu",
            "train.diagnostics=false",
        ],
        epochs=2,
        runs_dir=str(tmp_path),
        name="s",
        quiet=True,
    )
    snaps = read_snapshots(res.run_dir)
    assert [e for e, _, _ in snaps] == [1, 2]
    for e, meta, tensors in snaps:
        assert snapshot_file(res.run_dir, e).stat().st_size < 16_000
        assert set(tensors) == {
            "features.0.weight",
            "features.0.bias",
            "features.3.weight",
            "features.3.bias",
        }
        assert 0.0 <= float(meta["test_acc"]) <= 1.0
    # the last epoch's snapshot holds the last checkpoint's weights
    last = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors").model_state
    for k, t in snaps[-1][2].items():
        assert torch.equal(t, last[k].float())
    assert not torch.equal(snaps[0][2]["features.0.weight"], snaps[1][2]["features.0.weight"])


def test_snapshots_can_be_turned_off(tmp_path):
    res = cnnlab.fit(
        overrides=[
            "data.name=synthetic",
            "data.num_train=64",
            "data.num_test=16",
            "train.batch_size=32",
            "train.device=cpu",
            "train.diagnostics=false",
            "train.snapshots=false",
        ],
        epochs=1,
        runs_dir=str(tmp_path),
        name="s",
        quiet=True,
    )
    assert not (res.run_dir / "snapshots").exists()
    assert read_snapshots(res.run_dir) == []
