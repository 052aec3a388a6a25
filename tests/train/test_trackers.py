"""--report-to: a run's epochs, config, figures and checkpoints in TensorBoard and MLflow,
read back with TensorBoard's own reader and MLflow's client; a resume continues the same
tracker run."""

import json
import signal

import pytest

from cnnlab.cli import main
from cnnlab.runs.layout import read_metrics

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

SMALL = [
    "--dataset", "synthetic", "--set", "data.num_train=96", "--set", "data.num_test=48",
    "--batch-size", "32", "--device", "cpu", "--quiet", "--set", "train.report=false",
]  # fmt: skip


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]} | {
        "_images": acc.Tags()["images"]
    }


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module (creating one runs MLflow's schema migrations,
    seconds of work); each test's runs are its own runs in it."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_mlflow_stores_beside_the_runs_unless_told(tmp_path, monkeypatch):
    from cnnlab.train.trackers import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_tensorboard_and_mlflow_hold_the_run(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    argv = ["train", *SMALL, "--epochs", "2", "--runs-dir", str(tmp_path), "--name", "r"]
    assert main([*argv, "--report-to", "tensorboard,mlflow"]) == 0
    run = tmp_path / "r"
    rows = read_metrics(run)
    tb = scalars(run / "tensorboard")
    for key in ("train_loss", "val_acc", "test_acc", "lr", "images_per_s"):
        assert [s for s, _ in tb[key]] == [1, 2]
        assert [v for _, v in tb[key]] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert {"confusion_matrix", "test_predictions"} <= set(tb["_images"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    hp = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["optim.name"].string_value == "adam"
    exp = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"])
    assert "test_acc" in {m.name.tag for m in exp.experiment.metric_infos}

    from mlflow.tracking import MlflowClient

    state = json.loads((run / "trackers.json").read_text())["mlflow"]
    assert state["tracking_uri"] == mlflow_uri
    c = MlflowClient(tracking_uri=state["tracking_uri"])
    r = c.get_run(state["run_id"])
    assert r.info.run_name == "r" and r.info.status == "FINISHED"
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert r.data.params["optim.lr"] == str(cfg["optim"]["lr"])
    assert r.data.params["model.name"] == "lenet5" and r.data.params["train.epochs"] == "2"
    hist = c.get_metric_history(state["run_id"], "test_acc")
    assert [(m.step, m.value) for m in hist] == [(r["epoch"], r["test_acc"]) for r in rows]
    arts = {a.path for a in c.list_artifacts(state["run_id"], "checkpoints")}
    assert arts == {"checkpoints/best.safetensors", "checkpoints/last.safetensors"}
    figs = {a.path for a in c.list_artifacts(state["run_id"], "figures")}
    assert figs == {"figures/confusion_matrix.png", "figures/test_predictions.png"}


def test_a_resume_continues_the_same_tracker_runs(tmp_path, monkeypatch, mlflow_uri):
    uri = mlflow_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    argv = ["train", *SMALL, "--runs-dir", str(tmp_path), "--name", "r"]
    stop = {"n": 0}

    from cnnlab.train import callbacks

    real = callbacks.Progress.on_epoch_end

    def stop_after_first(self, trainer, epoch, m):  # a SIGTERM at the end of epoch 1
        real(self, trainer, epoch, m)
        if epoch == 1 and not stop["n"]:
            stop["n"] = 1
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(callbacks.Progress, "on_epoch_end", stop_after_first)
    assert main([*argv, "--epochs", "3", "--report-to", "mlflow,tensorboard"]) == 0
    run = tmp_path / "r"
    assert len(read_metrics(run)) == 1
    first = json.loads((run / "trackers.json").read_text())
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert json.loads((run / "trackers.json").read_text()) == first  # the same runs

    from mlflow.tracking import MlflowClient

    assert first["mlflow"]["tracking_uri"] == uri
    c = MlflowClient(tracking_uri=uri)
    hist = c.get_metric_history(first["mlflow"]["run_id"], "train_loss")
    assert [m.step for m in hist] == [1, 2, 3]
    assert [s for s, _ in scalars(run / "tensorboard")["train_loss"]] == [1, 2, 3]


def test_gan_runs_report_too(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["gan", "--dataset", "synthetic", "--set", "data.num_train=64",
            "--set", "gan.width=8", "--set", "gan.z_dim=8", "--set", "gan.eval_samples=32",
            "--batch-size", "32", "--device", "cpu", "--quiet", "--epochs", "1",
            "--runs-dir", str(tmp_path), "--name", "g", "--report-to", "tensorboard"]  # fmt: skip
    assert main(argv) == 0
    tb = scalars(tmp_path / "g" / "tensorboard")
    assert [s for s, _ in tb["loss_d"]] == [1] and tb["_images"] == ["samples"]


def test_bad_tracker_is_one_line_and_writes_nothing(tmp_path, capsys):
    argv = ["train", *SMALL, "--runs-dir", str(tmp_path), "--report-to", "wandb"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error: unknown tracker 'wandb'") and err.count("\n") == 1
    assert "tensorboard, mlflow, none" in err and not list(tmp_path.iterdir())
