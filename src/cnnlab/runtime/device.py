"""Device, precision, memory format and compile: decided here, once, and passed in."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

import torch

from cnnlab.config import TrainConfig
from cnnlab.errors import ConfigError
from cnnlab.models.layers import LeCunTanh


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = fp32
    channels_last: bool
    compile: bool
    cuda_graph: bool = False  # capture the model's forward/backward in a CUDA graph
    threads_why: str = ""  # how the CPU thread count was chosen (for describe)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # make_graphed_callables forbids autocast's weight-cast cache
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype, cache_enabled=not self.cuda_graph
        )

    def describe(self) -> str:
        prec = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        extra = ", channels_last" if self.channels_last else ""
        extra += ", compiled" if self.compile else ""
        extra += ", CUDA graph" if self.cuda_graph else ""
        name = self.device.type
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "cpu":
            n = torch.get_num_threads()
            why = f": {self.threads_why}" if self.threads_why else ""
            name = f"cpu ({n} thread{'s' if n > 1 else ''}{why})"
        return f"{name}, {prec}{extra}"


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu")
    return torch.device(name)


def native_bf16(dev: torch.device) -> bool:
    """Whether bf16 autocast runs on hardware bf16 units here (else it is emulated, slower
    than fp32, so precision "fast" only picks bf16 where this holds)."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, p, lambda: False)() for p in probes)
    return False


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a
    container's cpuset), else every core of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """All the cores this process may use, as PyTorch itself would take them.

    No guess from the load average: it trails by a minute, so a job that just ended (the
    previous run, a test) would make the next run single-threaded. Whether the cores are
    really busy is measured instead (:func:`threads_pay`)."""
    return available_cores()


def _burst_seconds(threads: int, x: torch.Tensor, out: torch.Tensor, ops: int = 4) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for _ in range(ops):
        torch.tanh(x, out=out)  # compute-bound: scales with threads on idle cores
    return time.perf_counter() - t0


def threads_pay(n: int, rounds: int = 5) -> float:
    """How much faster ``n`` threads run a burst of small parallel operations than one
    thread, now: the best of ``rounds`` alternating timings each (a few ms on idle cores).

    On idle cores this is well above 1; when other jobs hold the cores, OpenMP's threads
    wait for each other at every operation's barrier and it drops to 1 or below — a
    measurement of the present, not of the last minute. A burst already far slower on
    ``n`` threads, or 0.1 s spent, ends the measurement early (on busy cores one barrier
    can cost a scheduler time slice)."""
    # 256k floats, split across threads by ATen's parallel_for; no random numbers (the
    # run has seeded the global generator already and must not see it moved)
    x = torch.linspace(-3.0, 3.0, 1 << 18)
    out = torch.empty_like(x)
    before = torch.get_num_threads()
    t0 = time.perf_counter()
    one, many = math.inf, math.inf
    try:
        for _ in range(rounds):
            one = min(one, _burst_seconds(1, x, out))
            last = _burst_seconds(n, x, out)
            many = min(many, last)
            if last > 3 * one or time.perf_counter() - t0 > 0.1:
                break  # clearly slower, or the cores are too busy to finish it quickly
        return one / max(many, 1e-9)
    finally:
        torch.set_num_threads(before)


# train.threads=auto-measure: n threads no faster than one means the cores are busy and
# all of them are not worth their barriers; one thread then. Measured at most once a
# minute per process.
THREADS_PAY_MIN = 1.0
_MEASURED: dict[int, tuple[float, float]] = {}  # cores → (time.monotonic(), speed-up)


def measured_speedup(n: int, max_age: float = 60.0) -> float:
    now = time.monotonic()
    seen = _MEASURED.get(n)
    if seen is None or now - seen[0] > max_age:
        seen = _MEASURED[n] = (now, threads_pay(n))
    return seen[1]


def choose_threads(t: TrainConfig) -> tuple[int, str]:
    """(intra-op threads, why): ``train.threads`` when set, else OMP_NUM_THREADS when
    set, else every available core. None of these follows the machine's load, so the same
    command gives the same numbers whatever else runs (the thread count sets the order of
    float reductions). ``train.threads=auto-measure`` asks for the one load-dependent
    choice: one thread when a quick measurement finds the cores busy."""
    if t.threads == "auto-measure":
        n = default_threads()
        if n == 1:
            return 1, "auto-measure: 1 available core"
        speedup = measured_speedup(n)
        if speedup < THREADS_PAY_MIN:
            return 1, (
                f"auto-measure: {n} threads ran at {speedup:.1f}× one thread's speed (other "
                "jobs hold the cores), so 1; the numbers follow the machine's load"
            )
        return n, (
            f"auto-measure: {n} threads ran at {speedup:.1f}× one thread's speed; the "
            "numbers follow the machine's load"
        )
    if t.threads > 0:
        return t.threads, "train.threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    n = default_threads()
    return n, f"all {n} available core{'s' if n > 1 else ''}; set train.threads to change"


def make_runtime(t: TrainConfig) -> Runtime:
    dev = resolve_device(t.device)
    threads_why = ""
    if dev.type == "cpu" or t.threads != 0:
        n, threads_why = choose_threads(t)
        torch.set_num_threads(n)
    prec = t.precision
    if prec == "auto":
        prec = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    elif prec == "fast":
        prec = "bf16" if native_bf16(dev) else "fp32"
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    if amp is torch.float16 and dev.type != "cuda":
        raise ConfigError("fp16 autocast needs CUDA; use --set train.precision=bf16 or fp32")
    cl = t.channels_last.lower()
    # channels_last pays on CUDA (tensor cores). On the CPU it was measured slower: for
    # LeNet-5 (6 and 16 channels) batch norm ran 9× and max-pool 4× slower in NHWC than
    # in NCHW (the whole recipe step 1.45× slower), and AlexNet's step 1.1-1.8× slower
    # (AVX2 EPYC, docs/performance.md); auto keeps the plain layout there.
    channels_last = dev.type == "cuda" if cl == "auto" else cl == "true"
    # set either way: the flag is the process's, and a run after a deterministic one (the
    # Python API, a test session) must not inherit it (only when it changes: the call
    # imports part of torch's compiler, seconds of start-up)
    if torch.are_deterministic_algorithms_enabled() != bool(t.deterministic):
        torch.use_deterministic_algorithms(bool(t.deterministic), warn_only=True)
    if t.deterministic:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cg = t.cuda_graph.lower()
    # The graph replays fixed shapes, which drop_last gives; torch.compile brings its own
    # graphs (mode="reduce-overhead"), so the two are not stacked.
    cuda_graph = dev.type == "cuda" and not t.compile and cg in ("auto", "true", "step", "model")
    return Runtime(dev, amp, channels_last, bool(t.compile), cuda_graph, threads_why)


# Under this many parameters, precision "fast" means fp32 (TF32 matmuls/convs on CUDA):
# LeNet-5's step is made of tiny kernels, where bf16 autocast only adds casts (on CUDA and
# on the CPU alike); AlexNet-sized models gain from bf16 where it is native.
SMALL_MODEL_PARAMS = 1_000_000


def settle_precision(rt: Runtime, t: TrainConfig, model: torch.nn.Module) -> None:
    """precision=fast, once the model is known: fp32 for small models on any device."""
    if t.precision == "fast" and rt.amp_dtype is not None:
        if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
            rt.amp_dtype = None


# Elementwise, monotonically non-decreasing activations: for these,
# max_pool(act(x)) == act(max_pool(x)) exactly (forward and gradient), so the pool can go
# first and the activation runs on 4× fewer values (2×2 pools).
_MONOTONIC = (
    torch.nn.Tanh,
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.Sigmoid,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.Hardtanh,
    LeCunTanh,  # 1.7159·tanh(2x/3)
)


def _is_monotonic(m: torch.nn.Module) -> bool:
    if isinstance(m, torch.nn.LeakyReLU):
        return m.negative_slope >= 0
    if isinstance(m, torch.nn.ELU):
        return m.alpha >= 0
    return isinstance(m, _MONOTONIC)


def pool_before_activation(model: torch.nn.Module) -> int:
    """Swap every ``activation → MaxPool2d`` pair inside nn.Sequential containers into
    ``MaxPool2d → activation`` when the activation is monotonic; returns the number of
    swaps. The result is mathematically identical (max commutes with a monotonic map) and
    the state dict is unchanged (neither module has parameters). In-place activations
    stay safe: they then overwrite the pool's output, which max-pool's backward never
    reads (it keeps its input's argmax indices)."""
    n = 0
    for seq in model.modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        names = [name for name, _ in seq.named_children()]
        for a, b in zip(names, names[1:], strict=False):
            act, pool = getattr(seq, a), getattr(seq, b)
            if (
                _is_monotonic(act)
                and isinstance(pool, torch.nn.MaxPool2d)
                and not act._forward_hooks
                and not pool._forward_hooks
            ):
                setattr(seq, a, pool)  # same names, same order: only the modules trade places
                setattr(seq, b, act)
                n += 1
    return n
