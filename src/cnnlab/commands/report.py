"""cnnlab report"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_checkpoint_arg,
    add_command,
    add_data_args,
    add_device_arg,
    add_run_arg,
)

ORDER = 60


def register(sub) -> None:
    p = add_command(
        sub,
        "report",
        run,
        "write the run's self-contained HTML report (curves, verdict, confusion, ...)",
        "Write <run>/report.html: learning curves, generalisation verdict, "
        "confusion matrix, per-class accuracy, worst mistakes (the highest-loss test images and "
        "the most-confused class pairs, with examples), reliability "
        "diagram + ECE, gradient flow, model summary, resolved config, other analyses. "
        "All images are embedded; the file opens offline. The test accuracy is computed "
        "as `cnnlab eval` computes it (one function, one number).",
    )
    add_run_arg(p, "run directory (runs/<name>)")
    add_checkpoint_arg(p, "--checkpoint")
    add_data_args(p, data_dir="folder holding the dataset files (default: the run's)")
    add_device_arg(p)
    p.add_argument("--out", help="write the HTML here instead of <run>/report.html")


def run(args) -> int:
    from pathlib import Path

    from cnnlab.errors import CnnlabError
    from cnnlab.report.html import write_report

    if not Path(args.run).is_dir():
        raise CnnlabError(f"run directory {args.run!r} not found (see `cnnlab runs`)")
    info: dict = {}
    try:
        path = write_report(
            args.run, args.checkpoint, args.data_dir, out=args.out, info=info, device=args.device
        )
    except OSError as e:
        raise CnnlabError(f"cannot write the report: {e.strerror} ({e.filename})") from None
    ev = info.get("evaluation")
    if ev is not None:
        print(f"test accuracy {ev['accuracy']:.4f} ({ev['checkpoint']} checkpoint)")
    print(info["verdict"]["text"])
    print(f"wrote {path}")
    return 0
