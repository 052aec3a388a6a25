"""imagefolder: both layouts, the recorded split, formats, unreadable files, bad folders,
resident and streamed loading."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.config import Config
from cnnlab.data import folder as F
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import ConfigError, DataError


def colour_image(ci: int, rng, size=(40, 40)) -> np.ndarray:
    base = np.zeros((size[1], size[0], 3))
    base[..., ci % 3] = 200  # a class colour a model can learn
    return np.clip(base + 40 * rng.random(base.shape), 0, 255).astype(np.uint8)


def make_flat(root, classes=("cat", "dog", "fox"), n=10, ext="png"):
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(colour_image(ci, rng)).save(root / c / f"{i}.{ext}")
    return root


def make_split(root, parts=(("train", 6), ("val", 2)), classes=("cat", "dog", "fox")):
    for split, n in parts:
        make_flat(root / split, classes, n, "jpg")
    return root


def fake_task(cfg=None):
    return SimpleNamespace(
        cfg=cfg or Config(), rt=SimpleNamespace(device=torch.device("cpu"), channels_last=False)
    )


def test_flat_split_is_stratified_seeded_and_fixed_by_the_split_seed(tmp_path):
    root = make_flat(tmp_path / "f", n=10)
    a = F.plan_split(root)
    assert a.layout == "flat" and a.test_from == "carved" and a.classes == ["cat", "dog", "fox"]
    assert [sum(y == c for _, y in a.parts["test"]) for c in range(3)] == [2, 2, 2]
    assert len(a.parts["train"]) == 24 and "val" not in a.parts
    assert not {r for r, _ in a.parts["train"]} & {r for r, _ in a.parts["test"]}
    assert F.plan_split(root).parts == a.parts  # reproducible
    b = F.plan_split(root, split_seed=1)
    assert {r for r, _ in b.parts["test"]} != {r for r, _ in a.parts["test"]}
    # training files in a fixed shuffled order: "the first N" hold every class
    assert len({y for _, y in a.parts["train"][:6]}) == 3


def test_given_layouts(tmp_path):
    old = F.plan_split(make_split(tmp_path / "a"))  # train/ + val/: val/ is the test set
    assert old.test_from == "val/" and set(old.parts) == {"train", "test"}
    assert len(old.parts["test"]) == 6 and all(r.startswith("val/") for r, _ in old.parts["test"])
    full = F.plan_split(make_split(tmp_path / "b", (("train", 6), ("val", 2), ("test", 3))))
    assert full.test_from == "test/" and len(full.parts["val"]) == 6
    ds = load_dataset("imagefolder", tmp_path / "b", size=16)
    assert ds.val_x.shape == (6, 3, 16, 16) and ds.test_x.shape == (9, 3, 16, 16)
    assert ds.train_x.shape == (18, 3, 16, 16) and ds.train_x.dtype == torch.uint8
    only = F.plan_split(make_split(tmp_path / "c", (("train", 5),)))  # train/ alone: carved
    assert only.test_from == "carved" and len(only.parts["test"]) == 3


def test_formats_are_decoded_explicitly(tmp_path):
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey).save(root / "a" / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "a" / "deep.png")  # 16-bit
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent: white after compositing
    Image.fromarray(rgba, "RGBA").save(root / "b" / "clear.png")
    Image.fromarray(grey).convert("P").save(root / "b" / "pal.gif")
    Image.fromarray(grey).save(root / "b" / "g.tiff")
    ds = load_dataset("imagefolder", root, size=8, test_fraction=0.4, split_seed=0)
    assert ds.channels == 3  # a colour mode among them: RGB
    x = torch.cat([ds.train_x, ds.test_x])
    names = [r for r, _ in ds.split.parts["train"] + ds.split.parts["test"]]
    px = dict(zip(names, x, strict=True))
    assert torch.equal(px["a/deep.png"], px["a/grey.png"])  # scaled to 8 bits, not clipped
    assert torch.equal(px["a/grey.png"][0], torch.from_numpy(grey))
    assert int(px["b/clear.png"].min()) == 255  # transparency on white
    g = load_dataset("imagefolder", root, size=8, channels=1, test_fraction=0.4)
    assert g.channels == 1 and g.train_x.shape[1] == 1


def test_grey_folders_stay_one_channel_at_their_own_size(tmp_path):
    root = tmp_path / "g"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((20, 20), 50 * i, np.uint8)).save(root / c / f"{i}.png")
    ds = load_dataset("imagefolder", root)
    assert ds.channels == 1 and ds.size == 20 and ds.train_x.shape[1:] == (1, 20, 20)


def test_unreadable_files_are_named_once_and_skipped(tmp_path, capsys):
    root = make_flat(tmp_path / "f", n=5)
    for i in range(7):
        (root / "dog" / f"bad{i}.png").write_bytes(b"\x89PNG not really")
    ds = load_dataset("imagefolder", root, size=16)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "skipped 7 unreadable" in err and "bad0.png" in err
    assert len(ds.train_x) + len(ds.test_x) == 15
    assert len(ds.split.skipped) == 7 and "dog/bad0.png" not in json.dumps(ds.split.parts)


def test_every_image_of_a_class_unreadable_is_an_error(tmp_path):
    root = make_flat(tmp_path / "f", classes=("a", "b"), n=4)
    for p in (root / "b").iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable training image left in class 'b'"):
        load_dataset("imagefolder", root, size=16)


def _bad_folder(tmp_path, kind):
    root = tmp_path / kind
    if kind == "missing":
        return root
    if kind == "file":
        root.write_bytes(b"x")
        return root
    root.mkdir()
    if kind == "no classes":
        Image.new("L", (8, 8)).save(root / "loose.png")
    elif kind == "one class":
        make_flat(root / "x", classes=("only",))  # nested: root/x/only
        return root / "x"
    elif kind == "empty class":
        make_flat(root, classes=("a", "b"), n=3)
        (root / "c").mkdir()
    elif kind == "train is a file":
        (root / "train").write_bytes(b"x")
    elif kind == "symlink loop":
        make_flat(root, classes=("a",), n=3)
        (root / "b").mkdir()
        os.symlink("..", root / "b" / "up")  # loops back to the root: b stays empty
        os.symlink(".", root / "b" / "self")
    return root


BAD = {
    "missing": "not found",
    "file": "is a file, not a folder",
    "no classes": "no class sub-folders (it holds images directly)",
    "one class": "only one class folder ('only')",
    "empty class": "holds no image files",
    "train is a file": "is a file where a folder of class folders should be",
    "symlink loop": "b holds no image files",
}


@pytest.mark.parametrize("kind", BAD)
def test_bad_folders_are_one_clear_error(tmp_path, kind):
    with pytest.raises(DataError, match=BAD[kind].replace("(", r"\(").replace(")", r"\)")):
        load_dataset("imagefolder", _bad_folder(tmp_path, kind))


def test_bad_options(tmp_path):
    root = make_flat(tmp_path / "f", n=3)
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("imagefolder")
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("imagefolder", root, test_fraction=1.5)
    with pytest.raises(ConfigError, match="has no option 'sise'"):
        load_dataset("imagefolder", root, sise=32)
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        load_dataset("imagefolder", root, channels=2)
    with pytest.raises(ConfigError, match="split_seed"):
        load_dataset("imagefolder", root, split_seed=-1)
    with pytest.raises(ConfigError, match="mean and data.std need 1 or 3 values"):
        load_dataset("imagefolder", root, mean=[0.5, 0.5], std=[0.2, 0.2])


def test_fifos_and_symlink_loops_neither_hang_nor_multiply_images(tmp_path):
    root = make_split(tmp_path / "f", classes=("a", "b"), parts=(("train", 8), ("val", 2)))
    a = root / "train" / "a"
    os.mkfifo(a / "pipe.png")  # opening it would block forever
    os.symlink(".", a / "self1")  # two links to their own folder
    os.symlink(".", a / "self2")
    os.symlink("..", a / "loop")  # the split folder: every class again, and again
    os.symlink("../..", a / "root")  # the dataset folder: val/ must not leak into train
    os.symlink("../b", a / "other")  # another class
    os.symlink("missing", a / "dangling.png")
    (a / "sub").mkdir()
    Image.new("RGB", (40, 40)).save(a / "sub" / "deeper.jpg")
    os.symlink("sub", a / "sub-again")  # the same folder twice: taken once
    fs = F.plan_split(root)
    files = [r for r, _ in fs.parts["train"]]
    assert len(files) == 8 + 8 + 1
    assert "train/a/sub/deeper.jpg" in files and not any("pipe" in f for f in files)
    assert sorted(set(files)) == sorted(files) and not any(f.startswith("val") for f in files)


def test_split_file_keeps_the_test_set_when_files_come_and_go(tmp_path):
    root = make_flat(tmp_path / "f", n=10)
    ds = load_dataset("imagefolder", root, size=16)
    rec = tmp_path / "split.json"
    rec.write_text(ds.split_record())
    make_flat(root / "cat" / "more", classes=("x",), n=5)  # files added later: ignored
    again = load_dataset("imagefolder", root, split_file=rec, split="test")
    assert torch.equal(again.test_x, ds.test_x) and torch.equal(again.test_y, ds.test_y)
    assert again.mean == ds.mean and again.size == 16
    gone = ds.split.parts["test"][0][0]
    (root / gone).unlink()
    with pytest.raises(DataError, match=f"gone from .*first: {gone}"):
        load_dataset("imagefolder", root, split_file=rec, split="test")
    with pytest.raises(DataError, match="split file"):
        load_dataset("imagefolder", root, split_file=root / "cat" / "0.png")
    d = json.loads(rec.read_text())
    d["parts"]["test"][0][0] = "../../etc/passwd"
    rec.write_text(json.dumps(d))
    with pytest.raises(DataError, match="outside the image folder"):
        load_dataset("imagefolder", root, split_file=rec, split="test")


def test_a_run_read_back_decodes_only_its_test_files(tmp_path, monkeypatch):
    root = make_flat(tmp_path / "f", n=10)
    rec = tmp_path / "split.json"
    rec.write_text(load_dataset("imagefolder", root, size=16).split_record())
    seen = []
    real = F.decode_files

    def spy(root, files, *a, **k):
        seen.extend(r for r, _ in files)
        return real(root, files, *a, **k)

    monkeypatch.setattr(F, "decode_files", spy)
    ds = load_dataset("imagefolder", root, split_file=rec, split="test")
    assert len(ds.test_x) == 6 and sorted(seen) == sorted(r for r, _ in ds.split.parts["test"])


def test_streamed_and_resident_folders_give_the_same_batches(tmp_path):
    root = make_flat(tmp_path / "f", n=6)
    res = load_dataset("imagefolder", root, size=16)
    st = load_dataset("imagefolder", root, size=16, resident=False, workers=0)
    assert isinstance(st, F.StreamingFolder) and st.mean == pytest.approx(res.mean)
    cfg = Config()
    cfg.data.val_fraction, cfg.train.eval_batch_size, cfg.train.batch_size = 0.25, 100, 4
    task = fake_task(cfg)
    st.attach_loaders(task)
    x, y = next(iter(task.test_loader))
    from cnnlab.runs.load import loader_for

    meta = {"input": {"mean": st.mean, "std": st.std, "size": 16}}
    xr, yr = next(iter(loader_for(meta, res.test_x, res.test_y, "cpu")))
    assert torch.equal(y, yr) and torch.allclose(x, xr)
    assert task.val.num_samples == 4 and len(task.train_loader) == 2  # 14 - 4 val, batch 4
    xb, _ = next(iter(task.train_loader))
    assert xb.shape == (4, 3, 16, 16) and xb.dtype == torch.float32


def test_a_streamed_unreadable_file_is_skipped_and_named_once(tmp_path, capsys):
    root = make_flat(tmp_path / "f", n=6)
    st = load_dataset("imagefolder", root, size=16, resident=False, workers=0)
    (root / st.split.parts["test"][0][0]).write_bytes(b"broken later")
    task = fake_task()
    st.attach_loaders(task)
    for _ in range(2):
        n = sum(len(y) for _, y in task.test_loader)
    assert n == len(st.split.parts["test"]) - 1
    assert capsys.readouterr().err.count("skipped 1 unreadable") == 1


def test_train_and_eval_use_the_recorded_split(tmp_path):
    root = make_flat(tmp_path / "imgs", n=8)
    res = cnnlab.fit(
        model="mlp", dataset="imagefolder", data_dir=str(root), epochs=1, batch_size=4,
        runs_dir=str(tmp_path / "runs"), quiet=True, device="cpu",
        overrides=["data.size=12", "optim.lr=0.01"],
    )  # fmt: skip
    rec = json.loads((res.run_dir / "split.json").read_text())
    assert rec["counts"] == {"train": 19, "test": 5} and rec["decode"]["size"] == 12
    make_flat(root / "cat" / "new", classes=("x",), n=3)  # added after training
    ev = cnnlab.evaluate(str(res.run_dir), save=False)
    assert ev["n"] == 5
    assert abs(ev["accuracy"] - res.final["test_acc"]) < 1e-9
