"""How OpenMP's barrier wait policy moves LeNet-5's training step on 2 threads, on idle
cores and with other jobs holding them (busy loops started by this script), and that it
never moves the numbers. One child process per measurement (the policy is read when the
OpenMP runtime loads): 20 Adam steps of batch 256 after 3 warm-up steps; the median of
``--repeats``.

    python benchmarks/omp_wait.py [--repeats 3] [--busy 0 4 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

from _record import record, write_result

POLICIES = {
    "libgomp default": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
}
CHILD = """
import time, torch
torch.manual_seed(0)
torch.set_num_threads(2)
from cnnlab.models import create_model
m = create_model("lenet5", in_channels=1, num_classes=10, input_size=28)
opt = torch.optim.Adam(m.parameters(), 1e-3)
x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
def step():
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    return loss
for _ in range(3): step()
t = time.perf_counter()
for _ in range(20): loss = step()
print(time.perf_counter() - t, repr(float(loss.detach())))
"""


def spin() -> None:
    while True:
        pass


def measure(env_extra: dict) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return float(out[0]), out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 4, 8])
    ap.add_argument("--out")
    args = ap.parse_args()
    res = record("omp-wait", "omp_wait.py", None, [0])
    rows = []
    for busy in args.busy:
        procs = [mp.Process(target=spin, daemon=True) for _ in range(busy)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        try:
            for name, extra in POLICIES.items():
                got = [measure(extra) for _ in range(args.repeats)]
                secs = statistics.median(s for s, _ in got)
                rows.append({"busy_loops": busy, "policy": name, "seconds_20_steps": secs,
                             "all_seconds": [round(s, 3) for s, _ in got],
                             "final_loss": sorted({v for _, v in got})})  # fmt: skip
                print(f"busy {busy}: {name:26s} {secs:6.2f} s  loss {got[0][1]}")
        finally:
            for p in procs:
                p.terminate()
    res["rows"] = rows
    res["same_numbers"] = len({v for r in rows for v in r["final_loss"]}) == 1
    print(json.dumps({"same_numbers": res["same_numbers"]}))
    write_result(res, args.out, "omp-wait.json")


if __name__ == "__main__":
    main()
