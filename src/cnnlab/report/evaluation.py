"""The report's test-set evaluation: the numbers ``cnnlab eval`` prints (the same
function), the worst mistakes and the most-confused pairs with their images, and the
model summary."""

from __future__ import annotations

from pathlib import Path

from cnnlab.inference import confused_pairs, score, worst_mistakes
from cnnlab.models import count_macs, count_params
from cnnlab.report.plots import mistake_caption


def test_files(ds) -> list[str] | None:
    """The test images' file names (relative to the folder) in the test set's order, for an
    image folder; None for a built-in dataset (its images have only an index)."""
    parts = getattr(getattr(ds, "split", None), "parts", None)
    if isinstance(parts, dict) and isinstance(parts.get("test"), list):
        return [rel for rel, _ in parts["test"]]
    return None


def evaluate_run(
    run: Path, which: str = "best", n_wrong: int = 24, data_dir=None, device: str = "auto"
) -> dict:
    """Test-set metrics (the same evaluation as ``cnnlab eval``: :func:`inference.score`),
    the worst mistakes (the ``n_wrong`` highest-loss images and the most-confused class
    pairs with examples) and the model summary."""
    sc = score(run, data_dir=data_dir, device=device, which=which, download=False)
    res, logits, y, meta, ds = dict(sc.metrics), sc.logits, sc.labels, sc.meta, sc.dataset
    model = sc.model.cpu()
    cls = meta["classes"]
    # the worst mistakes: per-image losses from the same logits `cnnlab eval` scores
    res["worst"] = worst_mistakes(logits, y, cls, n_wrong)
    res["confused_pairs"] = confused_pairs(logits, y, cls, top=5, examples=4)
    files = test_files(ds)
    if files is not None and len(files) == len(y):  # an image folder: name the files
        for w in res["worst"]:
            w["file"] = files[w["index"]]
        for pair in res["confused_pairs"]:
            pair["files"] = [files[i] for i in pair["examples"]]
    res["wrong"] = {
        "images": ds.test_x[[w["index"] for w in res["worst"]]].numpy(),
        "captions": [mistake_caption(w) for w in res["worst"]],
    }
    for pair in res["confused_pairs"]:
        pair["images"] = ds.test_x[pair["examples"]].numpy()
    inp = meta["input"]
    layers = []
    for name, m in model.named_modules():
        if name and not list(m.children()):
            layers.append((name, type(m).__name__, sum(p.numel() for p in m.parameters()), str(m)))
    res["summary"] = {
        "params": count_params(model),
        "macs": count_macs(model, inp["channels"], inp["size"]),
        "layers": layers,
        "checkpoint": which,
        "epoch": meta.get("epoch"),
    }
    res["checkpoint_file"] = sc.checkpoint.stem  # best, or last where no best was kept
    res["class_counts"] = meta.get("class_counts")  # training images per class, if recorded
    d = meta.get("config", {}).get("data", {})
    n = ds.num_train  # the test split alone was loaded
    if isinstance(d.get("train_limit"), int) and d["train_limit"] > 0:
        n = min(n, d["train_limit"])
    vf = d.get("val_fraction", 0)
    res["n_val"] = int(round(n * vf)) if isinstance(vf, (int, float)) and 0 < vf < 1 else 0
    res["n_train"] = n - res["n_val"]
    return res
