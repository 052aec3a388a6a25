"""The GAN task, its config and `cnnlab gan` / `cnnlab generate`.

Unit tests drive the task by hand (what the Trainer reads and calls); the rest go
through the one Trainer.
"""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import cnnlab
from cnnlab.analysis.generate import generate, load_generator, score_run
from cnnlab.cli import main
from cnnlab.commands.gan import sectioned
from cnnlab.config import Config, apply_overrides, load_recipe, resolve_task
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import ConfigError
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.runs.layout import read_metrics
from cnnlab.runtime.device import make_runtime
from cnnlab.train.task import TaskContext
from cnnlab.train.tasks.gan import GanTask
from cnnlab.train.validate import check_gan, validate

SMALL = [
    "data.name=synthetic",
    "data.num_train=96",
    "data.num_test=64",
    "gan.width=8",
    "gan.z_dim=8",
    "train.batch_size=32",
    "gan.eval_samples=64",
    "train.device=cpu",
    "gan.grid=3",
]


def gan_config(*extra) -> Config:
    return validate(apply_overrides(load_recipe("dcgan"), [*SMALL, *extra]))


def fake_trainer(cfg: Config, run_dir: Path) -> TaskContext:
    """What a Task sees of the Trainer: its TaskContext (the default optimiser step)."""
    torch.manual_seed(cfg.train.seed)
    rt = make_runtime(cfg.train)
    ds = load_dataset(cfg.data.name, cfg.data.data_dir, False, **cfg.data.args)
    return TaskContext(
        cfg=cfg,
        dataset=ds,
        rt=rt,
        generator=torch.Generator(device=rt.device).manual_seed(cfg.train.seed),
        run_dir=run_dir,
    )


def built(cfg: Config, run_dir: Path) -> GanTask:
    task = GanTask()
    task.build(fake_trainer(cfg, run_dir))
    return task


def run_epoch(task: GanTask, epoch: int = 1) -> dict:
    """One epoch as the Trainer runs it: the task's step results summed on the device."""
    task.begin_epoch(epoch)
    sums: dict = {"loss_sum": 0.0, "n": 0}
    for i in range(task.steps_per_epoch()):
        loss, k, extra = task.step(i)
        sums["loss_sum"] = sums["loss_sum"] + loss * k
        sums["n"] += k
        for key, v in extra.items():
            sums[key] = sums.get(key, 0.0) + v
    return task.epoch_metrics({k: float(v) for k, v in sums.items()}, task.steps_per_epoch())


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """A tiny LeNet-5 trained on the same synthetic data: geometry and classes match."""
    d = tmp_path_factory.mktemp("judge")
    res = cnnlab.fit(
        overrides=["data.name=synthetic", "data.num_train=96", "data.num_test=64"]
        + ["train.batch_size=32", "train.device=cpu"],
        epochs=1,
        name="judge",
        runs_dir=str(d),
        quiet=True,
    )
    return str(res.run_dir)


# -- config -----------------------------------------------------------------------------


def test_resolve_task():
    cfg = Config()
    assert resolve_task(cfg) == "classify"
    cfg.train.adversarial = "pgd"
    assert resolve_task(cfg) == "adversarial"
    cfg.data.labels_per_class = 10
    assert resolve_task(cfg) == "semi"
    cfg.model.name = "dcgan-ac"
    assert resolve_task(cfg) == "gan"
    cfg.train.task = "classify"
    assert resolve_task(cfg) == "classify"
    assert resolve_task(load_recipe("dcgan")) == "gan"


@pytest.mark.parametrize(
    "extra, name",
    [
        ([], "dcgan"),
        (["gan.conditional=true"], "dcgan-conditional"),
        (["gan.conditional=true", "gan.aux_weight=1"], "dcgan-ac"),
        (["model.name=dcgan-conditional"], "dcgan-conditional"),
        (["model.name=dcgan-ac", "gan.aux_weight=0.5"], "dcgan-ac"),
    ],
)
def test_the_gan_section_settles_the_model_name(extra, name):
    cfg = gan_config(*extra)
    assert cfg.model.name == name
    assert cfg.gan.conditional == (name != "dcgan")
    # settling is stable: the settled name with the same gan section settles to itself
    again = [f"model.name={name}", "train.task=gan", *(e for e in extra if e[:4] == "gan.")]
    assert check_gan(apply_overrides(Config(), again)).model.name == name


@pytest.mark.parametrize(
    "extra, match",
    [
        (["gan.aux_weight=1"], "needs a conditional GAN"),
        (["model.name=dcgan-ac"], "needs gan.aux_weight > 0"),
        (["gan.width=0"], "gan.width must be ≥ 1"),
        (["gan.real_label=0"], "gan.real_label must be in (0, 1]"),
        (["train.batch_size=1"], "batch_size must be ≥ 2"),
        (["model.activation=elu"], "unknown GAN model option"),
        (["train.task=gan", "model.name=lenet5"], "needs a GAN model"),
        (["train.task=gann"], "unknown train.task 'gann'"),
        (["data.resize=32"], "no data.resize"),
    ],
)
def test_bad_gan_settings(extra, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        gan_config(*extra)


def test_bare_gan_keys_map_to_their_sections():
    assert sectioned("width=16") == "gan.width=16"
    assert sectioned("train_limit=256") == "data.train_limit=256"
    assert sectioned("epochs=3") == "train.epochs=3"
    assert sectioned("dataset=synthetic") == "data.name=synthetic"
    assert sectioned("lr=1e-3") == "optim.lr=1e-3"
    assert sectioned("train.threads=1") == "train.threads=1"
    assert sectioned("widht=3") == "widht=3"  # left to the config to refuse


def test_recipe_holds_the_dcgan_defaults():
    cfg = load_recipe("dcgan")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.beta1) == ("adam", 2e-4, 0.5)
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.sched.name) == (128, 10, "constant")
    assert (cfg.data.name, cfg.data.augment, cfg.data.val_fraction) == ("fashion-mnist", "none", 0)


# -- the task ---------------------------------------------------------------------------


def test_steps_move_both_networks(tmp_path):
    task = built(gan_config(), tmp_path)
    assert list(task.modules()) == ["G", "D"] and len(task.optimizers()) == 2
    assert task.kind == "gan" and task.monitor is None
    before = {k: v.detach().clone() for k, v in nn.ModuleDict(task.modules()).state_dict().items()}
    task.begin_epoch(1)
    assert task.steps_per_epoch() == 3
    loss, k, extra = task.step(0)
    assert loss.dim() == 0 and math.isfinite(float(loss)) and k == 32
    assert set(extra) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert float(extra["loss_d"] + extra["loss_g"]) == pytest.approx(float(loss) * k, rel=1e-5)
    after = nn.ModuleDict(task.modules()).state_dict()
    for net in ("G.", "D."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(net)), net
    m = run_epoch(task, 2)
    assert {"loss_d", "loss_g", "d_real", "d_fake", "train_loss", "steps"} <= set(m)
    assert "d_class_acc" not in m and 0 < m["d_real"] < 1 and m["steps"] == 3


def test_acgan_logs_its_class_accuracy(tmp_path):
    task = built(gan_config("gan.conditional=true", "gan.aux_weight=1"), tmp_path)
    assert 0 <= run_epoch(task)["d_class_acc"] <= 1
    assert task.meta()["gan"]["name"] == "dcgan-ac"


def test_evaluate_writes_grids_curves_and_judge_scores(tmp_path, judge):
    task = built(gan_config("gan.conditional=true", f"gan.judge={judge}"), tmp_path)
    assert "judge" in task.describe()
    run_epoch(task)
    m = task.evaluate(1)
    assert {"fd", "class_fidelity", "fd_real", "judge_acc_real"} <= set(m)
    assert m["fd"] > 0 and 0 <= m["class_fidelity"] <= 1
    # one row per class (10) × grid (3) columns of 28 px tiles with 2 px padding
    assert Image.open(tmp_path / "samples/epoch_001.png").size == (3 * 30 + 2, 10 * 30 + 2)
    assert (tmp_path / "losses.png").is_file() and (tmp_path / "fid.png").is_file()
    meta = task.meta()
    assert meta["input"]["range"] == [-1, 1] and meta["classes"] == task.classes


def test_bad_judge_and_dataset(tmp_path, judge):
    with pytest.raises(ConfigError, match="takes 1×28×28 images"):
        built(gan_config("data.size=32", f"gan.judge={judge}"), tmp_path)
    with pytest.raises(ConfigError, match="needs 28 or 32 px"):
        built(gan_config("data.size=16"), tmp_path)


# -- through the one Trainer ----------------------------------------------------------

FAST = [s for o in SMALL for s in ("--set", o)]


def gan_cli(tmp_path, *extra, name="g", epochs=2):
    argv = ["gan", "--runs-dir", str(tmp_path), "--name", name, "--quiet", "--epochs", str(epochs)]
    assert main([*argv, *FAST, *extra]) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory, judge):
    return gan_cli(tmp_path_factory.mktemp("cond"), "--conditional", "--judge", judge)


def test_cli_run_directory(cond_run):
    d = cond_run
    rows = read_metrics(d)
    assert [r["epoch"] for r in rows] == [1, 2]
    for k in ("loss_d", "loss_g", "d_real", "d_fake", "fd", "fd_real", "class_fidelity"):
        assert k in rows[0]
    assert "judge_acc_real" in rows[0] and "images_per_s" in rows[0]
    for f in (
        "config.yaml",
        "fid.png",
        "losses.png",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
    ):
        assert (d / f).is_file(), f
    cfg = load_recipe(d / "config.yaml")
    assert cfg.model.name == "dcgan-conditional" and cfg.gan.conditional and cfg.gan.width == 8
    ck = load_checkpoint(d / "checkpoints/last.safetensors")
    assert ck.meta["kind"] == "gan" and ck.meta["gan"]["name"] == "dcgan-conditional"
    assert not (d / "checkpoints/best.safetensors").exists()  # a GAN has no best


def test_load_generator_and_score(cond_run, judge):
    G, meta = load_generator(cond_run)
    assert not G.training and G.num_classes == 10 and meta["gan"]["name"] == "dcgan-conditional"
    s = generate(cond_run, n=20)
    assert s.images.shape == (20, 1, 28, 28) and s.nrow == 10
    out = score_run(cond_run, judge, n=60)
    assert out["fd"] > 0 and 0 <= out["class_fidelity"] <= 1


def test_generate_cli(tmp_path, capsys, cond_run, judge):
    out = tmp_path / "g.png"
    argv = ["generate", str(cond_run), "--class", "class3", "--n", "6", "--out", str(out)]
    assert main(argv) == 0
    assert Image.open(out).size == (3 * 30 + 2, 2 * 30 + 2)
    assert "class 3" in capsys.readouterr().out
    assert main(["generate", str(cond_run), "--n", "20", "--out", str(out)]) == 0
    assert Image.open(out).size == (10 * 30 + 2, 2 * 30 + 2)  # columns = classes
    argv = ["generate", str(cond_run), "--out", str(out), "--judge", judge, "--score-n", "60"]
    assert main([*argv, "--truncation", "1.0"]) == 0
    text = capsys.readouterr().out
    assert "truncation 1.0" in text and "class fidelity" in text and "Fréchet distance" in text
    one_line_error(capsys, [*argv, "--truncation", "0"], "--truncation must be > 0")


def one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab: error:") and "\n" not in err and "Traceback" not in err
    assert match in err, err


def test_generate_errors_one_line_exit_2(tmp_path, capsys, cond_run, judge):
    for cls, msg in (("11", "out of range"), ("shirt", "unknown class 'shirt'")):
        one_line_error(
            capsys,
            ["generate", str(cond_run), "--class", cls, "--out", str(tmp_path / "x.png")],
            msg,
        )
    one_line_error(capsys, ["generate", str(cond_run), "--out", str(tmp_path / "x.jpg")], ".png")
    one_line_error(capsys, ["generate", judge, "--out", str(tmp_path / "x.png")], "not a GAN run")
    assert not (tmp_path / "x.png").exists()
    one_line_error(capsys, ["eval", str(cond_run)], "a GAN run (use `cnnlab generate`)")


def test_documented_command(tmp_path, capsys):
    argv = ["gan", "--runs-dir", str(tmp_path), "--dataset", "synthetic", "--epochs", "1"]
    argv += ["--set", "train_limit=256", "--set", "width=16", "--device", "cpu"]
    assert main([*argv, "--set", "z_dim=8", "--set", "data.num_test=64"]) == 0
    out = capsys.readouterr().out
    assert "after 1 epochs: D(x)" in out and "loss D" in out
    (run,) = tmp_path.iterdir()
    assert run.name.startswith("dcgan-synthetic-") and read_metrics(run)[0]["steps"] == 2


def test_resume_continues_the_same_run_exactly(tmp_path):
    full = gan_cli(tmp_path, name="full", epochs=2)
    part = gan_cli(tmp_path, name="part", epochs=1)
    assert main(["gan", "--resume", str(part), "--epochs", "2", "--quiet"]) == 0
    assert_same_run(full, part)


def test_mid_epoch_resume_after_a_kill_is_exact(tmp_path):
    full = gan_cli(tmp_path, "--set", "train.checkpoint_every_steps=1", name="full", epochs=2)
    argv = ["gan", "--runs-dir", str(tmp_path), "--name", "killed", "--quiet", "--epochs", "2"]
    env = dict(os.environ, CNNLAB_FAULT="step:5", PYTHONPATH=str(Path(cnnlab.__file__).parents[1]))
    cmd = [sys.executable, "-m", "cnnlab", *argv, *FAST, "--set", "train.checkpoint_every_steps=1"]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == -signal.SIGKILL
    killed = tmp_path / "killed"
    ck = load_checkpoint(killed / "checkpoints/last.safetensors")
    assert ck.meta["position"]["step"] == 1  # epoch 2, step 1 of 3 (5th step; 4th saved)
    assert main(["gan", "--resume", str(killed), "--quiet"]) == 0
    assert_same_run(full, killed)


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["epoch"] for r in rb] == [1, 2]
    keys = ("loss_d", "loss_g", "d_real", "d_fake")
    assert [[r[k] for k in keys] for r in ra] == [[r[k] for k in keys] for r in rb]  # bit-exact
    sa = load_checkpoint(a / "checkpoints/last.safetensors").model_state
    sb = load_checkpoint(b / "checkpoints/last.safetensors").model_state
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_api_and_acgan(tmp_path):
    res = cnnlab.fit(
        recipe="dcgan",
        overrides=[*SMALL, "gan.conditional=true", "gan.aux_weight=1"],
        epochs=1,
        runs_dir=str(tmp_path),
        quiet=True,
    )
    assert 0 <= res.final["d_class_acc"] <= 1
    assert load_generator(res.run_dir)[1]["gan"]["name"] == "dcgan-ac"


def test_cli_errors_one_line_exit_2(tmp_path, capsys, judge, cond_run):
    base = ["gan", "--runs-dir", str(tmp_path), "--quiet"]
    one_line_error(
        capsys, [*base, "--dataset", "fashion-mnistt"], "unknown dataset 'fashion-mnistt'"
    )
    one_line_error(capsys, [*base, "--dataset", "synthetic", "--epochs", "0"], "epochs must be ≥ 1")
    one_line_error(capsys, [*base, "--set", "widht=3"], "unknown config key 'widht'")
    one_line_error(
        capsys, [*base, "--set", "data.sizee=3", "--dataset", "synthetic"], "no option 'sizee'"
    )
    one_line_error(capsys, [*base, "--set", "width=abc"], "width must be an integer")
    one_line_error(capsys, [*base, "--set", "aux_weight=1"], "needs a conditional GAN")
    one_line_error(capsys, [*base, *FAST, "--judge", str(tmp_path / "nope")], "judge run")
    one_line_error(capsys, [*base, *FAST, "--judge", str(cond_run)], "not a classifier run")
    one_line_error(capsys, [*base, *FAST, "--set", "data.size=16"], "needs 28 or 32 px")
    one_line_error(capsys, ["gan", "--resume", str(tmp_path / "nope")], "cannot resume")
    one_line_error(capsys, ["gan", "--resume", judge], "not a GAN run")


def test_one_trainer_resumes_any_run(tmp_path, capsys):
    # `cnnlab train --resume` (what the Trainer's messages say) continues a GAN run too
    part = gan_cli(tmp_path, name="part", epochs=1)
    assert main(["train", "--resume", str(part), "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in read_metrics(part)] == [1, 2]
    assert "run directory" in capsys.readouterr().out
