"""Experiment trackers: a run's epochs in TensorBoard and/or MLflow (``run.report_to``).

Off by default (``none``): no surprise logins, servers or files. One callback for every
Task, on rank 0 only under DDP:

- per epoch, every numeric metric the epoch line has (losses, accuracies, LR, images/s,
  seconds) at step = epoch;
- at the start, the resolved config as hyper-parameters (flattened ``section.key``);
- at the end, a classifier's confusion matrix and a grid of test images with their
  predictions (from the run's ``best`` checkpoint, else ``last``), a GAN's newest sample
  grid, and (MLflow) the checkpoints as artifacts.

TensorBoard writes event files into ``<run>/tensorboard``; a resume purges the events
after the checkpoint it continues from and goes on in the same folder. MLflow logs to
``MLFLOW_TRACKING_URI`` when set, else to a local SQLite store ``<runs-dir>/mlflow.db``
(artifacts beside it in ``<runs-dir>/mlartifacts``); the MLflow run's id is kept in
``<run>/trackers.json``, so ``--resume`` continues the same MLflow run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cnnlab.errors import ConfigError
from cnnlab.runs.files import atomic_write_text
from cnnlab.train.callbacks import Callback

TRACKERS = ("tensorboard", "mlflow")
EXPERIMENT = "cnnlab"
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def parse_report_to(value) -> list[str]:
    """``"tensorboard,mlflow"`` → ``["tensorboard", "mlflow"]``; none/empty → []."""
    items = [s.strip().lower() for s in str(value or "none").split(",") if s.strip()]
    bad = [s for s in items if s not in (*TRACKERS, "none")]
    if bad:
        raise ConfigError(
            f"unknown tracker {bad[0]!r} in run.report_to; choose from: "
            f"{', '.join(TRACKERS)}, none (comma-separated)"
        )
    if "none" in items and len(items) > 1:
        raise ConfigError("run.report_to: 'none' cannot be combined with a tracker")
    return [s for s in dict.fromkeys(items) if s != "none"]


def require(names: list[str]) -> None:
    """Fail before anything is written when a tracker's library is missing."""
    import importlib.util

    for n in names:
        if importlib.util.find_spec(n) is None:
            raise ConfigError(
                f"run.report_to={n} needs the {INSTALL[n]} package: pip install "
                f"{INSTALL[n]} (or pip install 'cnnlab[trackers]')"
            )


def flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = "null" if v is None else str(v)
    return out


def numeric(metrics: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
    }


class Trackers(Callback):
    """Sends a run to the trackers ``run.report_to`` names (rank 0 only)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.sinks: list = []

    def on_fit_start(self, trainer) -> None:
        if not trainer.dist.main or not self.names:
            return
        run_dir = Path(trainer.run_dir)
        state_file = run_dir / "trackers.json"
        try:
            state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        except (OSError, ValueError):
            state = {}
        first = trainer.start_epoch
        params = flat_params(trainer.cfg.to_dict())
        for n in self.names:
            sink = TensorBoardSink(run_dir, first) if n == "tensorboard" else MlflowSink(trainer)
            sink.start(params, state.get(n))
            state[n] = sink.ident()
            self.sinks.append(sink)
        atomic_write_text(state_file, json.dumps(state, indent=1) + "\n")

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        values = numeric(metrics)
        for s in self.sinks:
            s.metrics(values, epoch)

    def on_fit_end(self, trainer) -> None:
        if not self.sinks:
            return
        try:
            if trainer.history:  # the hyper-parameters beside the run's final numbers
                for s in self.sinks:
                    s.hparams(flat_params(trainer.cfg.to_dict()), numeric(trainer.history[-1]))
            figures = end_figures(trainer)
            for name, fig in figures:
                for s in self.sinks:
                    s.figure(name, fig, trainer.history[-1]["epoch"] if trainer.history else 0)
            for s in self.sinks:
                s.artifacts(Path(trainer.run_dir))
        finally:
            import matplotlib.pyplot as plt

            plt.close("all")
            for s in self.sinks:
                s.close()
            self.sinks = []


def end_figures(trainer) -> list[tuple[str, object]]:
    """(name, matplotlib figure): a classifier's confusion matrix and predictions on test
    images; a GAN's newest sample grid."""
    run_dir = Path(trainer.run_dir)
    if trainer.task.kind == "gan":
        grids = sorted((run_dir / "samples").glob("epoch_*.png"))
        return [("samples", image_figure(grids[-1]))] if grids else []
    ck = run_dir / "checkpoints"
    if not any((ck / f"{w}.safetensors").is_file() for w in ("best", "last")):
        return []
    from cnnlab.inference import confusion_figure, score

    which = "best" if (ck / "best.safetensors").is_file() else "last"
    s = score(run_dir, which=which, device=str(trainer.rt.device), download=False)
    return [
        ("confusion_matrix", confusion_figure(s.metrics["confusion"], s.metrics["classes"])),
        ("test_predictions", predictions_figure(s)),
    ]


def image_figure(path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    with Image.open(path) as im:
        arr = im.convert("RGB")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(arr)
    ax.axis("off")
    return fig


def predictions_figure(s, n: int = 16):
    """The first ``n`` test images with true and predicted class (red when wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = s.dataset.test_x[:n]  # (N, C, H, W) uint8
    pred = s.logits[:n].argmax(1)
    classes = list(s.meta["classes"])
    cols = 8
    rows = max(1, (len(x) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.4))
    for i, ax in enumerate(getattr(axes, "flat", [axes])):
        ax.axis("off")
        if i >= len(x):
            continue
        img = x[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray")
        ok = int(pred[i]) == int(s.labels[i])
        ax.set_title(
            f"{classes[int(pred[i])]}\n({classes[int(s.labels[i])]})",
            fontsize=6,
            color="black" if ok else "red",
        )
    fig.tight_layout()
    return fig


class TensorBoardSink:
    def __init__(self, run_dir: Path, first_epoch: int):
        self.dir = run_dir / "tensorboard"
        self.first = first_epoch

    def start(self, params: dict, state) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resume drops what a killed run logged after its checkpoint, then goes on
        self.w = SummaryWriter(str(self.dir), purge_step=self.first if self.first > 1 else None)
        if self.first <= 1:
            text = "\n".join(f"    {k}: {v}" for k, v in params.items())
            self.w.add_text("config", text, 0)

    def ident(self) -> dict:
        return {"log_dir": "tensorboard"}

    def metrics(self, values: dict, step: int) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def hparams(self, params: dict, final: dict) -> None:
        """TensorBoard's HParams view: the config, with the epoch scalars as its metrics."""
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(params, final):  # experiment, session start, session end
            self.w.file_writer.add_summary(summary)

    def figure(self, name: str, fig, step: int) -> None:
        self.w.add_figure(name, fig, step, close=False)

    def artifacts(self, run_dir: Path) -> None:
        pass  # TensorBoard keeps no files; the checkpoints stay in the run directory

    def close(self) -> None:
        self.w.close()


def tracking_uri(runs_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a local SQLite store beside the runs (MLflow's
    current default kind of store; its old file store is legacy)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir) / 'mlflow.db'}"


class MlflowSink:
    def __init__(self, trainer):
        self.runs_dir = Path(trainer.run_dir).resolve().parent
        self.name = Path(trainer.run_dir).name

    def start(self, params: dict, state) -> None:
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        uri = tracking_uri(self.runs_dir)
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        run_id = state.get("run_id") if isinstance(state, dict) else None
        if run_id is None:
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            exp_id = (
                exp.experiment_id
                if exp is not None
                else self.client.create_experiment(
                    EXPERIMENT, artifact_location=(self.runs_dir / "mlartifacts").as_uri()
                )
            )
            run_id = self.client.create_run(exp_id, run_name=self.name).info.run_id
            items = list(params.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(
                    run_id,
                    params=[mlflow.entities.Param(k, v[:6000]) for k, v in items[i : i + 100]],
                )
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def ident(self) -> dict:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def metrics(self, values: dict, step: int) -> None:
        import time

        import mlflow

        ts = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[mlflow.entities.Metric(k, v, ts, step) for k, v in values.items()]
        )

    def hparams(self, params: dict, final: dict) -> None:
        pass  # logged as the run's params at its start

    def figure(self, name: str, fig, step: int) -> None:
        self.client.log_figure(self.run_id, fig, f"figures/{name}.png")

    def artifacts(self, run_dir: Path) -> None:
        for name in ("best", "last"):
            p = run_dir / "checkpoints" / f"{name}.safetensors"
            if p.is_file():
                self.client.log_artifact(self.run_id, str(p), "checkpoints")
        if (run_dir / "config.yaml").is_file():
            self.client.log_artifact(self.run_id, str(run_dir / "config.yaml"))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
