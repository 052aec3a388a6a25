"""cnnlab data check: a generated folder with known problems is found out exactly."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from cnnlab.analysis import datacheck as dc
from cnnlab.cli import main
from cnnlab.errors import DataError


def pattern(c: int, rng) -> np.ndarray:
    """Class 0: bright left half, 1: right half, 2: top half; plus noise."""
    x = rng.integers(0, 60, (20, 20)).astype(np.uint8)
    sl = [np.s_[:, :10], np.s_[:, 10:], np.s_[:10, :]][c]
    x[sl] = rng.integers(180, 255, x[sl].shape)
    return x


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ and test/, three classes, with: one unreadable file, one exact copy of a
    training image in test/, one near copy of another in test/, one class-0 image filed
    as class 1, and a symlink loop."""
    root = tmp_path_factory.mktemp("imgs") / "shop"
    rng = np.random.default_rng(0)
    names = ["left", "right", "top"]
    for split, n in (("train", 24), ("test", 8)):
        for c, name in enumerate(names):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pattern(c, rng)).save(d / f"{i}.png")
    keep = np.asarray(Image.open(root / "train/left/3.png"))
    Image.fromarray(keep).save(root / "test/left/copy.bmp")  # same pixels, other format
    near = np.asarray(Image.open(root / "train/top/5.png")).astype(int)
    near[0, :4] += 3
    Image.fromarray(near.clip(0, 255).astype(np.uint8)).save(root / "test/top/near.png")
    Image.fromarray(pattern(0, rng)).save(root / "train/right/wrong.png")  # a left image
    (root / "train/top/broken.png").write_bytes(b"\x89PNG not really")
    os.symlink(root / "train/top", root / "train/top/loop")
    return root


def test_finds_every_planted_problem(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "check", str(folder), "--out", str(out), "--no-labels"]) == 0
    assert "near-duplicates" in capsys.readouterr().out
    r = json.loads((out / "datacheck.json").read_text())
    s = r["summary"]
    assert s["splits"] == {"train": 24 * 3 + 1, "test": 8 * 3 + 2}
    assert r["unreadable"] == [{"file": "train/top/broken.png", "error": "UnidentifiedImageError"}]
    assert s["sizes"] == {"20×20": 24 * 3 + 1 + 8 * 3 + 2} and s["modes"] == {"L": 99}
    assert r["class_counts"]["train"]["counts"] == {"left": 24, "right": 25, "top": 24}
    assert r["class_counts"]["train"]["imbalance_ratio"] == pytest.approx(25 / 24)
    assert r["exact_duplicates"] == [
        {"ids": ["train/left/3.png", "test/left/copy.bmp"], "splits": ["test", "train"],
         "labels": ["left"]}
    ]  # fmt: skip
    near = [(p["a"], p["b"]) for p in r["near_duplicates"]]
    assert ("train/top/5.png", "test/top/near.png") in near
    assert s["near_duplicates_across_splits"] >= 1
    assert r["settings"]["hash_candidates"] >= len(near) and r["settings"]["near_max_mad"] == 5
    assert r["label_issues"] is None and not (out / "label_issues.png").exists()
    assert (out / "near_duplicates.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # cleanlab and scikit-learn take seconds to import
def test_label_errors(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "check", str(folder), "--out", str(out), "--folds", "3"]) == 0
    assert "most likely label errors" in capsys.readouterr().out
    r = json.loads((out / "datacheck.json").read_text())
    suspects = [x["id"] for x in r["label_issues"]]
    assert "train/right/wrong.png" in suspects[:3]
    wrong = next(x for x in r["label_issues"] if x["id"] == "train/right/wrong.png")
    assert wrong["given"] == "right" and wrong["predicted"] == "left"
    assert r["summary"]["label_model_oof_accuracy"] > 0.9
    assert (out / "label_issues.png").read_bytes()[:4] == b"\x89PNG"


def test_dhash():
    rng = np.random.default_rng(1)
    a = np.stack([pattern(c, rng) for c in (0, 1, 0)])
    h = dc.dhash(a)
    assert h.dtype == np.uint64 and h[0] != h[1]
    pairs = dc.near_pairs(np.array([h[0], h[1], h[0]]), 0)
    assert pairs[:, :2].tolist() == [[0, 2]]


def test_a_dataset_by_name(tmp_path):
    out = tmp_path / "o"
    argv = ["data", "check", "synthetic", "--limit", "60", "--no-labels", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    s = json.loads((out / "datacheck.json").read_text())["summary"]
    assert s["splits"] == {"train": 60, "test": 60} and "label_issues" not in s
    # without --out: under --runs-dir, a second check numbered rather than overwriting
    runs = tmp_path / "runs"
    argv = ["data", "check", "synthetic", "--limit", "30", "--no-labels", "--runs-dir", str(runs)]
    assert main(argv) == 0 and main(argv) == 0
    assert sorted(p.name for p in runs.iterdir()) == [
        "datacheck-synthetic",
        "datacheck-synthetic-2",
    ]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: None, "neither a folder nor a dataset"),
        (lambda d: (d / "a.png").write_bytes(b"x"), "has no class sub-folders"),
        (lambda d: (d / "only").mkdir(), "has one class folder"),
        (lambda d: [(d / "a").mkdir(), (d / "b").mkdir(), (d / "x.png").write_bytes(b"")],
         "holds files next to its class folders"),
        (lambda d: (d / "a").mkdir() or (d / "b").mkdir(), "no readable image"),
    ],
)  # fmt: skip
def test_mistakes(tmp_path, capsys, make, match):
    d = tmp_path / "in"
    if make(d.mkdir() or d) is None and match.startswith("neither"):
        d = "no-such-dataset"
    out = tmp_path / "out"
    assert main(["data", "check", str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and match in err and "\n" not in err
    assert not out.exists()


def test_a_file_is_not_a_folder(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="is a file"):
        dc.folder_layout(f)


def photo(c: int, rng, size=(160, 120)) -> np.ndarray:
    """A colour 'photo': a textured background and a warm (class 0) or cool (class 1) disc."""
    h, w = size[1], size[0]
    a = rng.integers(40, 200, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.35) * h
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    a[disc] = [(230, 120, 40), (60, 90, 220)][c] + rng.normal(0, 20, (disc.sum(), 3))
    return a.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two classes of 30 colour JPEGs, plus planted junk: an 'image not found' GIF, a
    near-constant grey JPEG, and a PNG named .jpg."""
    root = tmp_path_factory.mktemp("photos") / "pics"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("warm", "cool")):
        (root / name).mkdir(parents=True)
        for i in range(30):
            Image.fromarray(photo(c, rng)).save(root / name / f"IMG_{i}.jpg", quality=90)
    ph = Image.new("P", (40, 30), 0)
    ph.putpalette([230, 230, 230, 90, 90, 90] + [0] * 762)
    ph.paste(1, (5, 12, 35, 16))
    ph.save(root / "cool" / "not_found.gif")
    Image.new("RGB", (160, 120), (128, 128, 128)).save(root / "warm" / "IMG_grey.jpg")
    Image.fromarray(photo(0, rng)).save(root / "warm" / "IMG_png.jpg", format="PNG")
    return root


def test_photo_junk_is_named(photos):
    im = dc.scan_folder(photos)
    assert im.feats is not None and im.feats.shape == (len(im.labels), 240)
    found = {j["id"]: " ".join(j["why"]) for j in dc.junk(im)}
    assert set(found) == {"cool/not_found.gif", "warm/IMG_grey.jpg", "warm/IMG_png.jpg"}
    assert (
        "GIF among JPEG" in found["cool/not_found.gif"] and "colours" in found["cool/not_found.gif"]
    )
    assert "near-constant" in found["warm/IMG_grey.jpg"]
    assert "named .jpg but is PNG" in found["warm/IMG_png.jpg"]


def test_photo_features_see_colour_and_edges():
    rng = np.random.default_rng(0)
    f = dc.photo_features(
        np.stack([dc._colour_thumb(Image.fromarray(photo(c, rng))) for c in (0, 1)])
    )
    assert f.shape == (2, 240) and np.isfinite(f).all()
    assert f[0, :64].sum() == pytest.approx(1) and not np.allclose(f[0, :64], f[1, :64])


@pytest.mark.slow  # scikit-learn and cleanlab
def test_photo_labels_are_judged_with_an_interval_and_a_floor(photos, tmp_path):
    im = dc.scan_folder(photos)
    res = dc.check(im, folds=3)
    v = res.verdict
    assert v["ok"] and v["interval"][0] > v["chance"] and 0 <= v["ece"] <= 1
    assert res.summary()["label_model_oof_accuracy"] > 0.9
    assert "photo features" in res.settings["label_model"]
    few = dc.scan_folder(photos, limit=20)  # 10 per class: below the floor
    r = dc.check(few, folds=3)
    assert not r.verdict["ok"] and r.verdict["why"].startswith("too few images to judge")
    assert r.issues is None
    shuffled = dc.scan_folder(photos)
    shuffled.labels = np.random.default_rng(1).permutation(shuffled.labels)
    r = dc.check(shuffled, folds=3)  # labels unrelated to the pictures
    assert not r.verdict["ok"] and "no better than chance" in r.verdict["why"]
    assert r.issues is None
