"""Fine-tuning: weights from a run or a file, the classifier replaced when the classes
differ, a frozen backbone that unfreezes on time, the backbone's own learning rate."""

import pytest
import torch
from safetensors.torch import save_file

import cnnlab
from cnnlab.cli import main
from cnnlab.config import Config, apply_overrides
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.runs.load import load_model
from cnnlab.train.callbacks import Callback
from cnnlab.train.finetune import load_weights, read_weights
from cnnlab.train.trainer import Trainer

FAST = [
    "data.name=synthetic",
    "data.num_train=128",
    "data.num_test=64",
    "train.batch_size=32",
    "train.eval_batch_size=64",
    "train.device=cpu",
    "train.diagnostics=false",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained LeNet-5 run (10 synthetic classes)."""
    d = tmp_path_factory.mktemp("src")
    return cnnlab.fit(overrides=FAST, epochs=1, runs_dir=str(d), name="src", quiet=True).run_dir


def built(*overrides, seed=1):
    cfg = apply_overrides(Config(), [*FAST, f"train.seed={seed}", *overrides])
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    return tr


def test_init_from_a_run_loads_every_tensor(source):
    src, _ = load_model(source)
    tr = built(f"model.init_from={source}")
    got, want = tr.model.state_dict(), src.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    # without init_from the same seed starts elsewhere
    fresh = built().model.state_dict()
    assert not torch.equal(fresh["features.0.weight"], want["features.0.weight"])


def test_other_classes_get_a_fresh_classifier(source):
    src, _ = load_model(source)
    want = src.state_dict()
    tr = built(f"model.init_from={source}", "data.num_classes=4")
    got = tr.model.state_dict()
    assert got["classifier.weight"].shape[0] == 4
    assert all(torch.equal(got[k], want[k]) for k in want if not k.startswith("classifier."))
    # the same count under other names is other classes too: the classifier starts fresh
    st = {k: v.clone() for k, v in want.items()}
    renamed = [f"c{i}" for i in range(10)]
    model = built().model
    note = load_weights(model, st, renamed, [f"class{i}" for i in range(10)], "x")
    assert "re-initialised (10 → 10 classes)" in note
    assert not torch.equal(model.state_dict()["classifier.weight"], want["classifier.weight"])
    assert torch.equal(model.state_dict()["head.1.weight"], want["head.1.weight"])


def test_weights_files(source, tmp_path):
    src, _ = load_model(source)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth", str(source / "checkpoints" / "last.safetensors")):
        state, *_ = read_weights(str(tmp_path / f))
        assert set(state) == set(sd)
    tr = built(f"model.init_from={tmp_path / 'w.pth'}")
    assert torch.equal(tr.model.state_dict()["features.0.weight"], sd["features.0.weight"])
    # torchvision's AlexNet keys are translated to the cnnlab layout
    tv = {"features.0.weight": torch.zeros(1), "classifier.1.weight": torch.zeros(1)}
    tv["classifier.6.weight"] = torch.zeros(1)
    torch.save(tv, tmp_path / "tv.pth")
    state, *_ = read_weights(str(tmp_path / "tv.pth"))
    assert set(state) == {"features.0.weight", "head.3.weight", "classifier.weight"}


class Snap(Callback):
    """The features' and classifier's weights after every epoch."""

    def __init__(self):
        self.rows = []

    def on_fit_start(self, trainer):
        self.rows.append(self.now(trainer))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.rows.append(self.now(trainer))

    @staticmethod
    def now(trainer):
        m = trainer.model
        return m.features[0].weight.detach().clone(), m.classifier.weight.detach().clone()


def test_freeze_then_unfreeze(source, tmp_path, capsys):
    snap = Snap()
    res = cnnlab.fit(
        overrides=[*FAST, f"model.init_from={source}", "train.freeze=features"]
        + ["train.unfreeze_at=2", "optim.backbone_lr_mult=0.1", "sched.name=constant"],
        epochs=2,
        runs_dir=str(tmp_path),
        name="ft",
        callbacks=[snap],
    )
    (f0, c0), (f1, c1), (f2, c2) = snap.rows
    assert torch.equal(f0, f1) and not torch.equal(c0, c1)  # epoch 1: only the head moves
    assert not torch.equal(f1, f2)  # epoch 2: the features train too
    out = capsys.readouterr().out
    assert "init_from" in out and "epoch 2: features unfrozen (LR × 0.1)" in out
    assert len(res.history) == 2


def test_backbone_group_lr():
    tr = built("optim.backbone_lr_mult=0.25", "sched.name=constant", "optim.lr=0.01")
    groups = tr.optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert groups[0]["lr"] == pytest.approx(0.01) and groups[1]["lr"] == pytest.approx(0.0025)
    n_back = sum(p.numel() for p in groups[1]["params"])
    assert n_back == sum(p.numel() for p in tr.model.features.parameters())
    body = built("train.freeze=body").optimizers[0].param_groups[1]["params"]
    assert sum(p.numel() for p in body) == sum(
        p.numel() for n, p in tr.model.named_parameters() if not n.startswith("classifier.")
    )


@pytest.mark.parametrize(
    "extra, match",
    [
        (["model.init_from=nowhere/run"], "not found"),
        (["model.init_from=w.txt"], "give a run directory"),
        (
            ["model.init_from=SRC", "model.name=lenet5-1998"],
            "holds a lenet5 model, this run trains lenet5-1998",
        ),
        (["train.freeze=convs"], "unknown train.freeze value"),
        (["train.unfreeze_at=2"], "needs something frozen"),
        (["optim.backbone_lr_mult=-1"], "backbone_lr_mult"),
    ],
)
def test_mistakes(source, tmp_path, capsys, extra, match):
    (tmp_path / "w.txt").write_text("x")
    extra = [e.replace("SRC", str(source)).replace("w.txt", str(tmp_path / "w.txt")) for e in extra]
    with pytest.raises((ConfigError, CheckpointError), match=match):
        built(*extra)
    runs = tmp_path / "runs"
    argv = ["train", "--runs-dir", str(runs), "--name", "x", "--epochs", "1"]
    assert main([*argv, *(a for e in [*FAST, *extra] for a in ("--set", e))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "\n" not in err
    assert not (runs / "x").exists()


@pytest.fixture
def imagenet_cache(tmp_path, monkeypatch):
    """A stand-in for torchvision's ImageNet AlexNet file: a torchvision-keyed state dict
    the test makes, registered under its own SHA-256 prefix, with an empty cache."""
    from cnnlab.models import create_model
    from cnnlab.models.alexnet import to_torchvision_keys
    from cnnlab.train import finetune as F

    torch.manual_seed(0)
    src = create_model("alexnet-torchvision", num_classes=1000, input_size=64)
    made = tmp_path / "made.pth"
    torch.save(to_torchvision_keys(src.state_dict()), made)
    digest = F.sha256_prefix(made)
    cache = tmp_path / "cache"
    monkeypatch.setattr(F, "weights_cache", lambda: cache)
    url = f"https://download.invalid/alexnet-test-{digest}.pth"
    monkeypatch.setitem(F.IMAGENET, "alexnet-torchvision", (url, digest))
    return F, src, made, cache / f"alexnet-test-{digest}.pth"


IMAGENET_RUN = ["model.name=alexnet-torchvision", "model.init_from=imagenet",
                "data.channels=3", "data.size=64", "data.num_train=32"]  # fmt: skip


def test_imagenet_weights_download_then_load(imagenet_cache, monkeypatch):
    F, src, made, cached = imagenet_cache
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        fetched.append((url, hash_prefix))
        cached.write_bytes(made.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    tr = built(*IMAGENET_RUN)
    assert fetched and fetched[0][1] == F.IMAGENET["alexnet-torchvision"][1]  # checked hash
    own, theirs = tr.model.state_dict(), src.state_dict()
    assert all(torch.equal(own[k], theirs[k]) for k in own if not k.startswith("classifier."))
    assert own["classifier.weight"].shape[0] == 10  # a fresh head for the 10 classes
    built(*IMAGENET_RUN)  # second time: from the cache, no download
    assert len(fetched) == 1


def test_imagenet_offline_and_wrong_file_are_one_line(imagenet_cache, monkeypatch, capsys):
    import urllib.error

    F, _, _, cached = imagenet_cache

    def offline(*a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match="place it as .*alexnet-test-") as e:
        built(*IMAGENET_RUN)
    assert str(cached) in str(e.value) and "\n" not in str(e.value)
    runs = cached.parent.parent / "runs"
    argv = ["train", "--quiet", "--runs-dir", str(runs)]
    argv += [a for o in [*FAST, *IMAGENET_RUN] for a in ("--set", o)]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("cnnlab: error: model.init_from=imagenet: cannot")
    assert not runs.exists() or not any(runs.iterdir())  # nothing left behind
    cached.write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="is not torchvision's file"):
        built(*IMAGENET_RUN)
    with pytest.raises(ConfigError, match="ImageNet weights exist for alexnet-torchvision"):
        built("model.init_from=imagenet")
