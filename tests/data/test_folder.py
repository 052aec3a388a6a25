"""imagefolder: JPEG files streamed by DataLoader workers into the trainer."""

import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import ConfigError, DataError


def make_folder(root, classes=("cat", "dog", "fox"), per_class=(6, 2), size=40):
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                base = torch.zeros(size, size, 3)
                base[..., ci] = 200  # a class colour the model can learn
                px = (base + 40 * torch.rand(size, size, 3, generator=g)).clamp(0, 255)
                Image.fromarray(px.to(torch.uint8).numpy()).save(d / f"{i}.jpg", quality=90)
    return root


def test_load_and_iterate(tmp_path):
    ds = load_dataset("imagefolder", make_folder(tmp_path), size=32, workers=0)
    assert ds.classes == ["cat", "dog", "fox"] and ds.num_classes == 3
    assert len(ds.train_files) == 18 and len(ds.val_files) == 6


def test_train_streams_through_workers(tmp_path):
    root = make_folder(tmp_path / "imgs")
    res = cnnlab.fit(
        model="mlp",
        dataset="imagefolder",
        data_dir=str(root),
        epochs=2,
        batch_size=4,
        runs_dir=str(tmp_path / "runs"),
        quiet=True,
        overrides=[
            "data.size=32",
            "data.workers=1",
            "data.grayscale=true",
            "train.eval_batch_size=5",
            "optim.lr=0.01",
        ],
    )
    m = res.final
    assert m["epoch"] == 2 and 0.0 <= m["test_acc"] <= 1.0
    assert res.model.cnnlab_args["in_channels"] == 1 and res.model.cnnlab_args["input_size"] == 32
    # 18 training images, batch 4, drop_last → 4 steps per epoch
    from cnnlab.runs.layout import read_metrics

    assert len(read_metrics(res.run_dir)) == 2


def test_transforms_and_loader_shapes(tmp_path):
    from types import SimpleNamespace

    from cnnlab.config import Config

    ds = load_dataset("imagefolder", make_folder(tmp_path), size=32, workers=0)
    cfg = Config()
    cfg.data.augment = "crop,flip"
    cfg.data.resize = 36
    cfg.data.val_fraction = 0.25
    cfg.train.batch_size = 5
    tr = SimpleNamespace(
        cfg=cfg, rt=SimpleNamespace(device=torch.device("cpu"), channels_last=False)
    )
    ds.attach_loaders(tr)
    assert len(tr.train_loader) == 2  # 18 images - 4 for validation = 14 → 2 full batches of 5
    x, y = next(iter(tr.train_loader))
    assert x.shape == (5, 3, 36, 36) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert tr.val.num_samples == 4 and tr.test_loader.num_samples == 6


def test_errors(tmp_path):
    with pytest.raises(DataError, match="not found; put train/<class>/ folders"):
        load_dataset("imagefolder", tmp_path)
    root = make_folder(tmp_path / "a")
    (root / "val" / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    ds = load_dataset("imagefolder", root, size=32, workers=0)
    from types import SimpleNamespace

    from cnnlab.config import Config

    tr = SimpleNamespace(
        cfg=Config(), rt=SimpleNamespace(device=torch.device("cpu"), channels_last=False)
    )
    ds.attach_loaders(tr)
    with pytest.raises(DataError, match=r"0.jpg: cannot decode image"):
        list(tr.test_loader)
    with pytest.raises(ConfigError, match="has no option 'sise'"):
        load_dataset("imagefolder", root, sise=32)


def test_fifos_and_symlink_loops_neither_hang_nor_multiply_images(tmp_path):
    import os

    root = make_folder(tmp_path / "f", classes=("a", "b"), per_class=(8, 2))
    a = root / "train" / "a"
    os.mkfifo(a / "pipe.png")  # opening it would block forever
    os.symlink(".", a / "self1")  # two links to their own folder
    os.symlink(".", a / "self2")
    os.symlink("..", a / "loop")  # the split folder: every class again, and again
    os.symlink("../b", a / "other")  # another class
    os.symlink("missing", a / "dangling.png")
    (a / "sub").mkdir()
    Image.new("RGB", (40, 40)).save(a / "sub" / "deeper.jpg")
    os.symlink("sub", a / "sub-again")  # the same folder twice: taken once
    ds = load_dataset("imagefolder", root, size=32, workers=0)
    files = [os.path.relpath(p, root) for p, _ in ds.train_files.samples]
    assert len(files) == 8 + 8 + 1
    assert "train/a/sub/deeper.jpg" in files and not any("pipe" in f for f in files)
    assert sorted(set(files)) == sorted(files)
    x, y = ds.train_files[0]
    assert x.size == (40, 40) and y == 0


@pytest.mark.slow
def test_an_image_that_cannot_be_decoded_leaves_no_run_folder(tmp_path):
    root = make_folder(tmp_path / "f", classes=("a", "b"), per_class=(4, 2))
    (root / "train" / "a" / "0.jpg").write_bytes(b"not a jpeg")
    runs = tmp_path / "runs"
    with pytest.raises(DataError, match="0.jpg: cannot decode image"):
        cnnlab.fit(dataset="imagefolder", data_dir=str(root), runs_dir=str(runs), epochs=1,
                   device="cpu", quiet=True,
                   overrides=["data.size=32", "data.workers=0", "train.batch_size=4"])  # fmt: skip
    assert not runs.exists() or list(runs.iterdir()) == []
