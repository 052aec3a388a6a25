"""What ``cnnlab data check`` found (:class:`DataCheck`): its summary, its JSON and its
contact sheets (the suspects, the junk and the near-duplicate pairs, drawn with labels)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cnnlab.analysis.datacheck_scan import THUMB, Images


def contact_sheet(
    im: Images, tiles: list[tuple[list[int], str]], title: str, cols: int = 8, scale: int = 3
) -> bytes:
    """A PNG grid: each tile shows its images side by side (upscaled ``scale``×) above a
    caption."""
    import io

    from PIL import Image, ImageDraw

    side = THUMB * scale
    per = max(len(t[0]) for t in tiles) if tiles else 1
    tw, th = per * side + (per - 1) * 2, side + 37
    cols = max(1, min(cols, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new("RGB", (cols * (tw + 8) + 8, rows * (th + 8) + 30), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), title, fill="black")
    for k, (members, caption) in enumerate(tiles):
        x0, y0 = 8 + (k % cols) * (tw + 8), 30 + (k // cols) * (th + 8)
        for m, i in enumerate(members):
            g = Image.fromarray(im.grey[i]).resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(g.convert("RGB"), (x0 + m * (side + 2), y0))
        for n, line in enumerate(caption.split("\n")[:3]):
            draw.text((x0, y0 + side + 2 + 11 * n), line[: tw // 6], fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class DataCheck:
    """What :func:`check` found (``to_dict`` for JSON)."""

    images: Images
    counts: dict
    exact: list[dict]
    near: list[dict]
    issues: list[dict] | None
    oof_acc: float | None
    settings: dict
    junk: list[dict] = field(default_factory=list)
    verdict: dict | None = None  # can the quick model judge labels (label_verdict)

    def summary(self) -> dict:
        im = self.images
        cross_exact = [g for g in self.exact if len(g["splits"]) > 1]
        cross_near = [
            p for p in self.near if p["splits"].split("/")[0] != p["splits"].split("/")[1]
        ]
        s = {
            "dataset": im.name,
            "images": int(len(im.labels)),
            "splits": {k: int(v) for k, v in Counter(im.splits.tolist()).items()},
            "classes": len(im.classes),
            "unreadable": len(im.unreadable),
            "sizes": dict(im.sizes.most_common()),
            "modes": dict(im.modes.most_common()),
            "imbalance_ratio": {k: v["imbalance_ratio"] for k, v in self.counts.items()},
            "exact_duplicate_groups": len(self.exact),
            "exact_duplicates_across_splits": len(cross_exact),
            "exact_duplicates_with_other_labels": sum(len(g["labels"]) > 1 for g in self.exact),
            "near_duplicate_pairs": len(self.near),
            "near_duplicates_across_splits": len(cross_near),
            "near_duplicates_with_other_labels": sum(
                p["labels"][0] != p["labels"][1] for p in self.near
            ),
        }
        s["junk"] = len(self.junk)
        if self.verdict is not None:
            s["label_check"] = self.verdict
        if self.issues is not None:
            s["label_issues"] = len(self.issues)
        if self.oof_acc is not None:
            s["label_model_oof_accuracy"] = round(self.oof_acc, 4)
        return s

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "settings": self.settings,
            "class_counts": self.counts,
            "unreadable": [{"file": f, "error": e} for f, e in self.images.unreadable],
            "exact_duplicates": self.exact,
            "near_duplicates": [
                {k: v for k, v in p.items() if k not in ("ia", "ib")} for p in self.near
            ],
            "label_issues": self.issues,
            "junk": [{k: v for k, v in j.items() if k != "index"} for j in self.junk],
        }

    def sheets(self, n: int = 48) -> dict[str, bytes]:
        """Contact sheets: ``label_issues`` (the top ``n`` suspects) and
        ``near_duplicates`` (the ``n`` closest pairs, cross-split first)."""
        im, out = self.images, {}
        if self.issues:
            tiles = [
                (
                    [r["index"]],
                    f"{r['id']}\nlabel {r['given']}\nlooks {r['predicted']}",
                )
                for r in self.issues[:n]
            ]
            out["label_issues"] = contact_sheet(
                im,
                tiles,
                f"{im.name}: likely label errors (the given label; what the quick model sees)",
            )
        if self.junk:
            tiles = [([j["index"]], f"{j['id']}\n{j['why'][0]}") for j in self.junk[:n]]
            out["junk"] = contact_sheet(im, tiles, f"{im.name}: probably not photos (junk)")
        if self.near:
            pairs = sorted(
                self.near,
                key=lambda p: (p["splits"] in ("train/train", "test/test"), p["pixel_mad"]),
            )[:n]
            tiles = [
                (
                    [p["ia"], p["ib"]],
                    f"{p['a']} | {p['b']}\n{p['labels'][0]} | {p['labels'][1]}\n"
                    f"{p['bits']} bits, grey diff {p['pixel_mad']:.1f}",
                )
                for p in pairs
            ]
            out["near_duplicates"] = contact_sheet(
                im,
                tiles,
                f"{im.name}: near-duplicate pairs (splits, dHash bits, pixel MAD)",
                cols=6,
            )
        return out
