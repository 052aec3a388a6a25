"""The numerics a run trains with, recorded in every checkpoint and reused on resume.

Float sums are not associative, so the same weights and batches give different bits when
the work is split differently: the CPU's thread count sets how ATen splits a reduction;
precision, memory layout, deterministic kernels and the library versions choose the
kernels themselves. A run records all of these (:func:`record`); ``--resume`` takes the
thread count back from the record and refuses, in one line, to continue where another
one cannot be had here (another torch, another device or precision), because the resumed
run would no longer be the run it continues (:func:`reuse`)."""

from __future__ import annotations

import torch

from cnnlab.errors import CheckpointError
from cnnlab.runtime.device import Runtime

PRECISION = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# what must be equal for a resume to continue bit for bit, in the order a message names
# them; threads are not here: a different count can always be set again
MUST_MATCH = ("torch", "device", "gpu", "cuda", "cudnn", "precision", "channels_last",
              "deterministic")  # fmt: skip


def record(rt: Runtime) -> dict:
    """What this process computes with now (JSON-able)."""
    cuda = rt.device.type == "cuda"
    return {
        "torch": torch.__version__,
        "device": rt.device.type,
        "gpu": torch.cuda.get_device_name(rt.device) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "threads": torch.get_num_threads() if rt.device.type == "cpu" else None,
        "precision": PRECISION[rt.amp_dtype],
        "channels_last": bool(rt.channels_last),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "compile": bool(rt.compile),
        "cuda_graph": bool(rt.cuda_graph),
    }


def describe(rec: dict) -> str:
    """``cpu, 2 threads, fp32, torch 2.14.1`` (what a message names)."""
    where = rec.get("gpu") or rec.get("device", "?")
    n = rec.get("threads")
    threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
    return f"{where}{threads}, {rec.get('precision', '?')}, torch {rec.get('torch', '?')}"


def reuse(rt: Runtime, recorded: dict | None, *, threads_asked: bool, exact: bool,
          run: str) -> list[str]:  # fmt: skip
    """Make this process compute as the checkpoint's run did. Sets the recorded thread
    count (unless ``threads_asked``: the resume itself changed ``train.threads``) and
    returns the warnings to print. Raises CheckpointError when something else differs and
    ``exact`` holds (``train.exact_resume``)."""
    if not isinstance(recorded, dict):
        return []  # a checkpoint written before numerics were recorded: nothing to reuse
    now = record(rt)
    notes: list[str] = []
    was_n = recorded.get("threads")
    if isinstance(was_n, int) and was_n > 0 and rt.device.type == "cpu":
        if threads_asked and was_n != now["threads"]:
            notes.append(
                f"warning: train.threads={now['threads']} differs from the {was_n} the run "
                "trained with: the resumed run will not match an uninterrupted one bit for bit"
            )
        elif was_n != now["threads"]:
            torch.set_num_threads(was_n)
            rt.threads_why = f"as the run trained with; {now['threads']} would be chosen now"
            now["threads"] = was_n
        else:
            rt.threads_why = "as the run trained with"
    changed = [k for k in MUST_MATCH if k in recorded and recorded[k] != now.get(k)]
    if not changed:
        return notes
    what = ", ".join(f"{k} {recorded[k]} → {now.get(k)}" for k in changed)
    if exact:
        raise CheckpointError(
            f"cannot resume {run} bit for bit: it trained with {describe(recorded)} and here "
            f"{what}; resume it where those match (e.g. the same torch and --device), or "
            "continue with different numbers: --set train.exact_resume=false"
        )
    notes.append(
        f"warning: resuming {run} with other numerics ({what}): train.exact_resume=false, so "
        "it will not match an uninterrupted run bit for bit"
    )
    return notes
