"""cnnlab alone: epoch time against batch size and against dataset size, and AlexNet
training/inference images/s on synthetic batches (registry models against
``torchvision.models.alexnet`` under the same precision and memory format)."""

from __future__ import annotations

import statistics
import time
from functools import partial

import torch

from cnnlab.errors import CnnlabError
from cnnlab.studies.loops import cnnlab_config

ALEXNETS = ("alexnet", "alexnet-torchvision", "torchvision.models.alexnet")


def epoch_seconds(spec: dict, batch_size: int, limit: int | None) -> dict:
    from cnnlab.train.trainer import Trainer

    s = dict(spec, epochs=1)
    s["overrides"] = list(spec.get("overrides") or []) + [f"train.batch_size={batch_size}"]
    if limit:
        s["overrides"].append(f"data.train_limit={limit}")
    cfg = cnnlab_config(s)
    tr = Trainer(cfg, quiet=True)
    tr.setup()
    c0 = time.process_time()
    m = tr.train_epoch(1)
    return {
        "batch_size": batch_size,
        "images": len(tr.task.train_loader) * tr.task.train_loader.batch_size,
        "seconds": m["seconds"],
        "cpu_seconds": time.process_time() - c0,
        "images_per_s": m["images_per_s"],
    }


def scaling(spec: dict, batch_sizes, fractions, n_train: int, log=print) -> dict:
    by_bs, by_n = [], []
    for bs in batch_sizes:
        r = epoch_seconds(spec, bs, None)
        by_bs.append(r)
        log(
            f"  batch {bs:>5}: {r['seconds']:6.2f} s/epoch (cpu {r['cpu_seconds']:.2f} s, "
            f"{r['images_per_s']:,.0f} img/s)"
        )
    base_bs = cnnlab_config(spec).train.batch_size
    for f in fractions:
        lim = max(base_bs, int(n_train * f))
        r = epoch_seconds(spec, base_bs, lim if f < 1 else None)
        r["fraction"] = f
        by_n.append(r)
        log(
            f"  {f:>4.2f} of the data: {r['seconds']:6.2f} s/epoch (cpu {r['cpu_seconds']:.2f} s, "
            f"{r['images']:,} images)"
        )
    return {"by_batch_size": by_bs, "by_dataset_size": by_n}


def graphed(fn, dev: torch.device, warmup: int = 3):
    """``fn`` captured in one CUDA graph (after ``warmup`` eager calls on a side stream), as
    a replay function; on the CPU ``fn`` itself. ``fn`` must use static inputs only."""
    if dev.type != "cuda":
        return fn
    from cnnlab.runtime.graphs import capture_graph

    g, _ = capture_graph(fn, dev, warmup)
    return g.replay


def _images_per_s(fn, dev: torch.device, batch: int, steps: int, rounds: int) -> float:
    """Median over ``rounds`` timings of ``steps`` calls (after one warm-up call)."""
    fn()
    _sync(dev)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(dev)
        rates.append(batch * steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def alexnet_throughput(
    device: str,
    batch: int,
    steps: int,
    size: int = 224,
    names=ALEXNETS,
    log=print,
    threads: int = 0,
    rounds: int = 3,
) -> dict:
    """Training and inference images/s on synthetic batches, same precision for all.

    Every model runs the same eager loop (architecture against architecture). On CUDA,
    cnnlab's models also run as cnnlab runs them (``graph_*`` keys): the training step
    (forward, backward, fused optimiser) replayed from one CUDA graph, as the trainer's
    whole-step graph does, and inference through :class:`GraphedForward`, as the trainer's
    evaluation and ``predict_logits`` do; torchvision's model stays in the eager loop."""
    import torchvision

    from cnnlab.config import TrainConfig
    from cnnlab.models import MODELS, create_model
    from cnnlab.runtime.device import make_runtime

    rt = make_runtime(TrainConfig(device=device, threads=threads))
    dev = rt.device
    out = {
        "device": rt.describe(),
        "batch": batch,
        "size": size,
        "steps": steps,
        "rounds": rounds,
        "models": {},
    }
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for name in names:
        reference = name.startswith("torchvision.")
        if reference:
            model = torchvision.models.alexnet(num_classes=1000)
        elif name not in MODELS.names():
            out["models"][name] = {"skipped": f"model {name!r} is not registered in this build"}
            log(f"  {name}: skipped (not registered)")
            continue
        else:
            try:
                model = create_model(name, in_channels=3, num_classes=1000, input_size=size)
            except (CnnlabError, ValueError, RuntimeError) as e:
                out["models"][name] = {"skipped": f"cannot build at {size} px: {e}"}
                log(f"  {name}: skipped ({e})")
                continue
        graphs = dev.type == "cuda" and not reference
        r = out["models"][name] = time_model(model, rt, x, y, steps, rounds, graphs)
        log(throughput_line(name, r))
        del model
    vs_torchvision(out["models"])
    return out


def time_model(model, rt, x, y, steps: int, rounds: int, graphs: bool) -> dict:
    """Training and inference images/s of ``model`` on the batch ``(x, y)`` in eager mode;
    with ``graphs`` also as cnnlab runs them on CUDA (``graph_*`` keys)."""
    from cnnlab.runtime.graphs import GraphedForward

    dev, batch = rt.device, x.shape[0]
    model.to(dev)
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, **_opt_kw(dev))

    def train_step():
        # grads set to None inside a capture: backward allocates them in the graph's
        # pool, so each replay overwrites them rather than adding to them
        opt.zero_grad(set_to_none=True)
        with rt.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.inference_mode(), rt.autocast():
            return model(x)

    r = {}
    variants = [("", train_step, infer_step)] + [("graph_", None, None)] * graphs
    for prefix, train_fn, infer_fn in variants:
        if prefix:  # captured after the eager timings: warm kernels, same weights
            model.train(True)
            train_fn = graphed(train_step, dev)
            model.train(False)
            # what cnnlab's evaluation runs; the input sits in the graph's buffer, as
            # the eager loops reuse their x (no per-call copy on either side)
            fwd = GraphedForward(model, rt.autocast)
            infer_fn = partial(fwd, fwd.buffer(x))
        for label, fn in (("train", train_fn), ("infer", infer_fn)):
            model.train(label == "train")
            r[f"{prefix}{label}_images_per_s"] = _images_per_s(fn, dev, batch, steps, rounds)
    return r


def throughput_line(name: str, r: dict) -> str:
    return (
        f"  {name}: train {r['train_images_per_s']:,.1f} img/s, "
        f"infer {r['infer_images_per_s']:,.1f} img/s"
        + (
            f"; CUDA graph: train {r['graph_train_images_per_s']:,.1f}, "
            f"infer {r['graph_infer_images_per_s']:,.1f}"
            if "graph_train_images_per_s" in r
            else ""
        )
    )


def vs_torchvision(models: dict) -> None:
    """Each of cnnlab's models' images/s over torchvision's AlexNet's (``*_vs_torchvision``
    keys, added to ``models``)."""
    tv = models.get("torchvision.models.alexnet", {})
    for name, r in models.items():
        if "train_images_per_s" in r and tv and name != "torchvision.models.alexnet":
            for prefix in ("", "graph_"):
                if f"{prefix}train_images_per_s" in r:
                    for label in ("train", "infer"):
                        r[f"{prefix}{label}_vs_torchvision"] = (
                            r[f"{prefix}{label}_images_per_s"] / tv[f"{label}_images_per_s"]
                        )


def _opt_kw(dev: torch.device) -> dict:
    return {"fused": True} if dev.type == "cuda" else {"foreach": True}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
