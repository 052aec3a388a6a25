"""Measure cnnlab's CPU speed levers one by one for LeNet-5 (CPU seconds per step).

    PYTHONPATH=src python benchmarks/levers.py [--batch-sizes 256,512,1024] [--reps 3]

Each configuration's steps are interleaved with the others' (rep by rep) and timed with
the process's CPU clock, so load from other jobs on a shared machine affects them alike
and inflates them less than wall time. Prints the median of the reps per configuration,
the loader's cost per epoch (uint8 → augmented, normalised floats), and 1 vs 2 threads.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from cnnlab.data.loader import ResidentLoader
from cnnlab.models import create_model
from cnnlab.runtime.device import pool_before_activation


def make_step(bs: int, cl: bool, swap: bool, bf16: bool):
    torch.manual_seed(0)
    m = create_model("lenet5", in_channels=1, num_classes=10, input_size=28)
    if swap:
        pool_before_activation(m)
    if cl:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), 1e-3, foreach=True)
    x = torch.randn(bs, 1, 28, 28)
    y = torch.randint(0, 10, (bs,))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)

    def ac():
        if bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        with ac():
            loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(fn, n: int) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="256,512,1024")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    cfgs = [
        (bs, cl, sw, bf)
        for bs in sizes
        for cl in (False, True)
        for sw in (False, True)
        for bf in (False, True)
        if cl or not bf
    ]
    steps = {c: make_step(*c) for c in cfgs}
    for c in cfgs:
        steps[c]()
    cpu: dict = {c: [] for c in cfgs}
    for _ in range(args.reps):
        for c in cfgs:
            cpu[c].append(timed(steps[c], max(3, 3072 // c[0]))[1])
    print("LeNet-5 step, 1 thread, CPU seconds per 60,000-image epoch (median of reps):")
    for c in cfgs:
        bs, cl, sw, bf = c
        per_epoch = sorted(cpu[c])[len(cpu[c]) // 2] * 60000 / bs
        flags = ", ".join(
            f for f, on in (("channels_last", cl), ("pool-first", sw), ("bf16", bf)) if on
        )
        print(f"  batch {bs:>5}  {flags or 'baseline':<36} {per_epoch:6.2f} s")
    x = torch.randint(0, 255, (60000, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (60000,))
    for aug in ((), ("crop",), ("crop", "flip")):
        loader = ResidentLoader(
            x, y, 256, 0.286, 0.353, shuffle=True, drop_last=True, augment=aug, channels_last=True
        )
        c0 = time.process_time()
        for _ in loader:
            pass
        print(
            f"loader, augment={','.join(aug) or 'none'}: {time.process_time() - c0:.2f} s CPU/epoch"
        )
    step = make_step(256, True, True, False)
    for th in (1, 2, 1, 2):
        torch.set_num_threads(th)
        w, c = timed(step, 20)
        print(f"threads={th}: {w * 1e3:7.1f} ms/step wall, {c * 1e3:7.1f} ms/step CPU")


if __name__ == "__main__":
    main()
