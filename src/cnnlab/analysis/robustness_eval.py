"""The robustness sweep: a run's model scored on its test set, clean, under each
(corruption, severity) and under each (attack, ε).

:class:`RunEval` holds the model on [0, 1] pixels (normalised inside
:class:`~cnnlab.analysis.attacks.Normalized`) and the test set as the run's loader
converts it, batched on the run's device. Each experiment draws from its own generator,
seeded by :func:`seed_for` from the seed and the experiment's name, so a subset of the
sweep gives the same numbers as the whole.
"""

from __future__ import annotations

import torch

from cnnlab.analysis.attacks import Normalized, fgsm, pgd
from cnnlab.analysis.corruptions import SEVERITIES, corrupt
from cnnlab.runs.load import loader_for, open_run
from cnnlab.runtime.device import resolve_device

ATTACKS = ("fgsm", "pgd")


def seed_for(seed: int, *parts) -> int:
    """A stable per-experiment seed (Python's hash() is salted per process)."""
    h = seed * 1_000_003
    for p in parts:
        for ch in str(p):
            h = (h * 131 + ord(ch)) % (2**61 - 1)
    return h


class RunEval:
    """The run's model on [0, 1] pixels plus its test set, batched."""

    def __init__(
        self, target, device="auto", data_dir=None, limit=None, batch_size=500, which="best"
    ):
        self.dev = resolve_device(device)
        model, meta, ds, self.run_dir = open_run(target, which, self.dev, data_dir)
        self.meta = meta
        x, y = ds.test_x, ds.test_y
        if limit:
            x, y = x[:limit], y[:limit]
        self.loader = loader_for(meta, x, y, self.dev, batch_size)
        self.model = Normalized(model, self.loader.mean, self.loader.std).to(self.dev).eval()
        self.n = len(y)
        self.dataset = ds
        self.bar = None  # a cnnlab.progress bar counting batches, when one is shown

    def batches(self):
        ld = self.loader
        for i in range(0, self.n, ld.batch_size):
            yield ld.pixels(ld.x[i : i + ld.batch_size], False), ld.y[i : i + ld.batch_size]
            if self.bar is not None:
                self.bar.advance()

    @torch.no_grad()
    def accuracy(self, transform=None, seed: int = 0) -> float:
        g = torch.Generator(device=self.dev).manual_seed(seed)
        correct = 0
        for x01, y in self.batches():
            if transform is not None:
                x01 = transform(x01, g)
            correct += int((self.model(x01).argmax(1) == y).sum())
        return correct / self.n

    def attack_accuracy(
        self, kind: str, eps: float, steps: int, step_size: float, seed: int
    ) -> float:
        g = torch.Generator(device=self.dev).manual_seed(seed)
        correct = 0
        for x01, y in self.batches():
            if kind == "fgsm":
                xa = fgsm(self.model, x01, y, eps)
            else:
                xa = pgd(self.model, x01, y, eps, steps, step_size, True, g)
            with torch.no_grad():
                correct += int((self.model(xa).argmax(1) == y).sum())
        return correct / self.n


def measure(ev: RunEval, names, levels, atk, eps_list, pgd_steps, pgd_step_size, seed) -> dict:
    """The sweep's figures: clean accuracy, then per corruption (accuracy per level, mean)
    and per attack (accuracy per ε). ``ev.bar`` must be a progress bar."""
    res: dict = {
        "run": str(ev.run_dir),
        "dataset": ev.dataset.name,
        "n": ev.n,
        "seed": seed,
        "clean_acc": ev.accuracy(),
        "corruptions": corruption_sweep(ev, names, levels, seed),
    }
    if names:
        res["mean_corruption_acc"] = sum(v["mean"] for v in res["corruptions"].values()) / len(
            names
        )
    res.update(attack_sweep(ev, atk, eps_list, pgd_steps, pgd_step_size, seed))
    return res


def corruption_sweep(ev: RunEval, names, levels, seed: int) -> dict:
    """{corruption: levels, their parameters, accuracy per level, mean accuracy}."""
    out = {}
    for name in names:
        accs = []
        for lv in levels:
            ev.bar.describe(f"robustness: {name} severity {lv}")
            s = seed_for(seed, name, lv)
            accs.append(ev.accuracy(lambda x, g, name=name, lv=lv: corrupt(x, name, lv, g), s))
        out[name] = {
            "levels": list(levels),
            "params": [SEVERITIES[name][lv - 1] for lv in levels],
            "acc": accs,
            "mean": sum(accs) / len(accs),
        }
    return out


def attack_sweep(ev: RunEval, atk, eps_list, pgd_steps, pgd_step_size, seed: int) -> dict:
    """{attack: radii, accuracy per ε (and PGD's settings)}; PGD steps default to ε/4."""
    out = {}
    for kind in atk:
        rows = {}
        for e in eps_list:
            ev.bar.describe(f"robustness: {kind.upper()} ε={e:g}")
            size = pgd_step_size if pgd_step_size else e / 4
            rows[f"{e:g}"] = ev.attack_accuracy(kind, e, pgd_steps, size, seed_for(seed, kind, e))
        out[kind] = {"eps": [float(e) for e in eps_list], "acc": list(rows.values())}
        if kind == "pgd":
            out[kind].update(
                steps=pgd_steps,
                step_size=pgd_step_size or "eps/4",
                random_start=True,
            )
    return out
