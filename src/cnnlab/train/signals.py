"""A graceful stop on SIGINT/SIGTERM: the Trainer finishes the current step, writes a
checkpoint of its position and returns (the CLI exits 0). A second signal stops at once
(``KeyboardInterrupt``; the run's files stay consistent, being written atomically).
Under DDP every rank stops at the same step: the flag is reduced across ranks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import torch


class GracefulStop:
    """The handlers, installed for the length of a fit, and the signal they received."""

    def __init__(self, warn: Callable[[str], None]):
        self.warn = warn
        self.signum: int | None = None  # set by the handler (or by a callback, to stop)
        self.old: dict = {}

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop now (the files stay consistent)
            raise KeyboardInterrupt
        self.signum = signum
        self.warn(
            f"received {signal.Signals(signum).name}: finishing the current step and writing "
            "a checkpoint (send it again to stop at once)"
        )

    def install(self) -> None:
        """Take SIGINT and SIGTERM (only the main thread can; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.old = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}

    def requested(self, dist, device) -> bool:
        """Whether any rank got SIGINT/SIGTERM (all ranks must stop at the same step)."""
        if not dist.enabled:
            return self.signum is not None
        flag = torch.tensor([float(self.signum is not None)], device=device)
        return bool(dist.all_reduce(flag, "max").item())

    def stopped_message(self, epoch: int, step: int, run_dir) -> str:
        """What the run prints once it has stopped at ``step`` of ``epoch`` (0: its end)."""
        name = signal.Signals(self.signum).name if self.signum else "a signal"
        where = f"epoch {epoch}, step {step}" if step else f"the end of epoch {epoch}"
        return (
            f"stopped by {name} at {where}; checkpoint saved. "
            f"Resume with: cnnlab train --resume {run_dir}"
        )
