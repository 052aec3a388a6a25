"""The figures a bench reports from the epochs it timed: time to an accuracy (training
seconds, and wall seconds from the launch), per-loop summaries, ratios between loops and
their aggregates over seeds."""

from __future__ import annotations

import statistics

THRESHOLDS = (0.90, 0.91)


def time_to(epochs: list[dict], threshold: float) -> float | None:
    """Training seconds (evaluation excluded) until the first epoch at ≥ threshold."""
    total = 0.0
    for m in epochs:
        total += m["seconds"]
        if m["test_acc"] >= threshold:
            return total
    return None


def summarize(epochs: list[dict]) -> dict:
    med = statistics.median(m["seconds"] for m in epochs)
    cpu = statistics.median(m["cpu_seconds"] for m in epochs)
    imgs = epochs[-1]["images"]
    rss = [m["rss_mb"] for m in epochs]
    s = {
        "epochs": len(epochs),
        "median_s_per_epoch": med,
        "min_s_per_epoch": min(m["seconds"] for m in epochs),
        "median_cpu_s_per_epoch": cpu,
        "images_per_s": imgs / med if med > 0 else None,
        "test_acc": epochs[-1]["test_acc"],
        "peak_rss_mb": max(m["peak_rss_mb"] for m in epochs),
        "rss_growth_mb": rss[-1] - rss[min(1, len(rss) - 1)],  # after the warm-up epoch
        "gpu_peak_mb": epochs[-1]["gpu_peak_mb"],
        "one_time_seconds": sum(m.get("capture_seconds", 0.0) for m in epochs),
    }
    for t in THRESHOLDS:
        s[f"time_to_{round(t * 100)}"] = time_to(epochs, t)
    return s


def ratios(res: dict) -> dict:
    """Speed-ups of cnnlab over each reference (reference time / cnnlab time)."""
    if "cnnlab" not in res:
        return {}
    c = res["cnnlab"]["summary"]
    out = {}
    for k in res:
        if k == "cnnlab":
            continue
        r = res[k]["summary"]
        out[k] = {
            "speedup_wall": r["median_s_per_epoch"] / c["median_s_per_epoch"],
            "speedup_cpu": r["median_cpu_s_per_epoch"] / max(c["median_cpu_s_per_epoch"], 1e-9),
            "cnnlab_over_ref_time": c["median_s_per_epoch"] / r["median_s_per_epoch"],
            "acc_diff": c["test_acc"] - r["test_acc"],
        }
    return out


def wall_to(epochs: list[dict], threshold: float) -> float | None:
    """Wall seconds from the launch until the first epoch at ≥ threshold was evaluated."""
    return next((m["wall"] for m in epochs if m["test_acc"] >= threshold), None)


def tta_summary(epochs: list[dict], thresholds) -> dict:
    """One run's figures: median training seconds per epoch, accuracy, and for each
    threshold the wall seconds (start-up included) and the training seconds to reach it."""
    return {
        "epochs": len(epochs),
        "median_s_per_epoch": statistics.median(m["seconds"] for m in epochs) if epochs else None,
        "final_acc": epochs[-1]["test_acc"] if epochs else None,
        "to": {
            f"{t:g}": {"wall": wall_to(epochs, t), "train": time_to(epochs, t)} for t in thresholds
        },
    }


def aggregate(runs: list[dict], thresholds) -> dict:
    """Over seeds: the median epoch time, mean accuracies, and per threshold the median
    wall/training seconds of the runs that reached it and how many did."""
    sums = [r["summary"] for r in runs]
    out = {
        "seeds": len(runs),
        "median_s_per_epoch": statistics.median(s["median_s_per_epoch"] for s in sums),
        "final_acc": statistics.mean(s["final_acc"] for s in sums),
        "epochs": max(s["epochs"] for s in sums),
        "to": {},
    }
    for t in thresholds:
        k = f"{t:g}"
        got = [s["to"][k] for s in sums if s["to"][k]["wall"] is not None]
        out["to"][k] = {
            "reached": len(got),
            "wall": statistics.median(g["wall"] for g in got) if got else None,
            "train": statistics.median(g["train"] for g in got) if got else None,
        }
    return out


def epoch_ratios(loops: dict) -> dict:
    """Each reference loop's median training seconds per epoch over cnnlab's."""
    if "cnnlab" not in loops:
        return {}
    ours = loops["cnnlab"]["summary"]["median_s_per_epoch"]
    return {
        k: v["summary"]["median_s_per_epoch"] / ours
        for k, v in loops.items()
        if k != "cnnlab" and ours
    }
