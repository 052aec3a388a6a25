"""Test-time augmentation (TTA): the views of an image a run's probabilities are averaged
over — exactly the flips and shifts it was trained with.

No torch at import (the server runs TTA on an ONNX export without it): the views of a
run are worked out where the run is (``cnnlab predict``/``eval``, ``cnnlab export``, the
torch backend) and recorded in an export's metadata (:func:`views_record`), from which
the server reads them back (:func:`recorded_views`). :func:`apply_view` takes numpy arrays
and torch tensors alike.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnlab.errors import CnnlabError


class View(NamedTuple):
    """One TTA view: an optional horizontal flip, then a shift by (dy, dx) pixels with zero
    fill (the padding ``random_crop`` crops from)."""

    flip: bool
    dy: int
    dx: int

    @property
    def name(self) -> str:
        parts = ["flip"] if self.flip else []
        if self.dy or self.dx:
            parts.append(f"shift({self.dy:+d},{self.dx:+d})")
        return "+".join(parts) or "original"


TTA_OPS = ("flip", "crop")  # deterministic views exist for these; noise/erase have none
TTA_SHIFT_DIV = 32  # TTA shifts are at least 1/32 of the image's side


def _augment_spec(meta: dict):
    return meta.get("config", {}).get("data", {}).get("augment", "auto")


def trained_augment(
    meta: dict, dataset_default: str | None = None, option: str = "--tta"
) -> tuple[str, ...]:
    """The augmentations a run was trained with: the checkpoint's record of them (runs since
    TTA), else its config's ``data.augment`` ('auto' → ``dataset_default``, the dataset's
    default). ``option`` names the request in an error (``--tta``, or the server's ``tta``)."""
    from cnnlab.data.augment import parse_augment

    if isinstance(meta.get("augment"), list):
        return tuple(str(a) for a in meta["augment"])
    spec = _augment_spec(meta)
    if spec in (None, "", "auto", "default") and dataset_default is None:
        raise CnnlabError(
            f"{option}: cannot tell which augmentation this run was trained with (data.augment: "
            "auto, and its dataset is not available here to look its default up)"
        )
    return parse_augment(spec, dataset_default or "none")


def dataset_augment(meta: dict) -> str | None:
    """The default augmentation of a run's dataset, for a run that recorded
    ``data.augment: auto`` but not what it resolved to (runs from before TTA); None when the
    dataset cannot be opened here (or is not needed)."""
    if isinstance(meta.get("augment"), list):
        return None
    if _augment_spec(meta) not in (None, "", "auto", "default"):
        return None
    from cnnlab.runs.load import load_run_dataset

    try:
        return getattr(load_run_dataset(meta, download=False), "augment", None)
    except CnnlabError:
        return None


def tta_views(meta: dict, dataset_default: str | None = None, option: str = "--tta") -> list[View]:
    """The views TTA averages over: exactly what the run's training augmentation allows.
    The original; its mirror image when trained with ``flip``; shifts up, down, left and
    right (of each of those) when trained with ``crop`` (random crops of a
    ``data.pad``-padded image), by max(1, pad // 2, side / :data:`TTA_SHIFT_DIV`) pixels —
    proportional to the image: a 224-px photo moves by 7 px, where half a 2-px pad would be
    1 px and change nothing. A run trained without flip or crop has no view to add: an
    error that says so. The original is always the first view."""
    ops = trained_augment(meta, dataset_default, option)
    pad = meta.get("config", {}).get("data", {}).get("pad", 2)
    pad = pad if isinstance(pad, int) and not isinstance(pad, bool) else 2
    side = (meta.get("input") or {}).get("size")
    side = side if isinstance(side, int) and not isinstance(side, bool) else 0
    flips = (False, True) if "flip" in ops else (False,)
    s = max(1, pad // 2, round(side / TTA_SHIFT_DIV))
    shifts = [(0, 0)]
    if "crop" in ops and pad > 0:
        shifts += [(-s, 0), (s, 0), (0, -s), (0, s)]
    views = [View(f, dy, dx) for f in flips for dy, dx in shifts]
    if len(views) == 1:
        trained = ",".join(ops) or "none"
        raise CnnlabError(
            f"{option}: this run was trained without flip or crop augmentation (data.augment: "
            f"{trained}), so there is no view to average over; leave {option} out"
        )
    return views


def own_views(meta: dict) -> list[View] | None:
    """The views a run scored itself on while training (``train.eval_flip``: the image and
    its mirror image), so that ``cnnlab eval`` also prints the number the run logged; None
    for a run that scored plain images."""
    names = meta.get("eval_views")
    if isinstance(names, list) and "flip" in names:
        return [View(False, 0, 0), View(True, 0, 0)]
    return None


def describe_views(names: list[str]) -> str:
    """``[original, shift(-1,+0), …, flip, …]`` → ``10 views: original and flip, each also
    shifted 1 px up, down, left and right``."""
    base = "original and flip" if "flip" in names else "original"
    shifts = sorted({n.split("shift(")[1] for n in names if "shift(" in n})
    px = max((abs(int(v)) for sh in shifts for v in sh.rstrip(")").split(",")), default=0)
    more = f", each also shifted {px} px up, down, left and right" if px else ""
    return f"{len(names)} views: {base}{more}"


def apply_view(x, v: View):
    """``v`` applied to a batch (B, C, H, W) — a numpy array or a torch tensor — of pixels in
    [0, 1] (what is shifted in is 0)."""
    if v.flip:
        x = np.flip(x, 3) if isinstance(x, np.ndarray) else x.flip(3)
    if v.dy or v.dx:
        h, w = x.shape[-2:]
        dy, dx = max(-h, min(h, v.dy)), max(-w, min(w, v.dx))  # further: all of it is fill
        out = np.zeros_like(x) if isinstance(x, np.ndarray) else x.new_zeros(x.shape)
        to_rows, from_rows = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h - max(dy, 0))
        to_cols, from_cols = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w - max(dx, 0))
        out[..., to_rows, to_cols] = x[..., from_rows, from_cols]
        x = out
    return x


# -- the views an export records, for the server ----------------------------------------------


def views_record(meta: dict) -> dict:
    """What an export's metadata says about TTA for the run ``meta`` describes: its views
    (flip, dy, dx and name each), or none and why."""
    try:
        views = tta_views(meta, dataset_augment(meta), option="tta")
    except CnnlabError as e:
        return {"views": None, "why": str(e)}
    return {"views": [{"name": v.name, **v._asdict()} for v in views]}


def recorded_views(md: dict) -> list[View]:
    """The views an export's metadata records (:func:`views_record`); a CnnlabError that says
    why when there are none."""
    rec = md.get("tta")
    if not isinstance(rec, dict):
        raise CnnlabError(
            "tta: this export does not record the augmentation its run was trained with "
            "(exported before TTA was served); export it again"
        )
    if not rec.get("views"):
        raise CnnlabError(str(rec.get("why") or "tta: this model has no TTA views"))
    return [View(bool(v["flip"]), int(v["dy"]), int(v["dx"])) for v in rec["views"]]
