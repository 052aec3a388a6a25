"""The weights' moving average (``train.ema``) and evaluation on mirror images
(``train.eval_flip``)."""

import copy

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.runs.checkpoint import load_checkpoint
from cnnlab.train.callbacks import Callback
from cnnlab.train.ema import WeightAverage, weight_average

from .test_tasks import fit


@pytest.mark.parametrize("warmup", [True, False])
def test_the_average_follows_the_weights_with_the_warm_up_decay(warmup):
    model = nn.Linear(3, 2)
    avg = WeightAverage(model, 0.99, warmup)
    assert not any(p.requires_grad for p in avg.model.parameters())
    expected = copy.deepcopy(model.weight.detach())
    for n in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)  # a step of the optimiser
        d = min(0.99, (1 + n) / (10 + n)) if warmup else 0.99
        expected = d * expected + (1 - d) * model.weight.detach()
        avg.update(model)
        torch.testing.assert_close(avg.model.weight, expected)
    assert avg.updates == 3
    assert not torch.equal(avg.model.weight, model.weight)


def test_the_student_and_the_update_count_round_trip_through_the_state():
    student = nn.Linear(3, 2)
    avg = WeightAverage(student, 0.9)
    avg.update(student)
    tensors, meta = avg.state(student)
    assert set(tensors) == {"student.weight", "student.bias"} and meta == {"ema_updates": 1}
    other, again = nn.Linear(3, 2), WeightAverage(student, 0.9)
    again.load_state(other, {**tensors, "p_model": torch.zeros(2)}, meta)
    assert again.updates == 1 and torch.equal(other.weight, student.weight)
    assert weight_average(student, 0.0, warmup=True) is None


class KeepTask(Callback):
    def on_fit_end(self, trainer):
        self.task = trainer.task


def accuracy(model, loader, flip: bool) -> float:
    model.eval()
    hits = n = 0
    with torch.no_grad():
        for x, y in loader:
            p = model(x).softmax(1)
            if flip:
                p = (p + model(x.flip(-1)).softmax(1)) / 2
            hits += int((p.argmax(1) == y).sum())
            n += len(y)
    return hits / n


def test_the_average_is_evaluated_and_saved_and_the_student_is_state(tmp_path):
    keep = KeepTask()
    res = fit("classify-ema", tmp_path, "ema", callbacks=[keep])
    ck = load_checkpoint(res.run_dir / "checkpoints" / "last.safetensors")
    student = {k[len("task.student.") :]: v for k, v in ck.tensors.items() if ".student." in k}
    assert student and student.keys() == ck.model_state.keys()
    weights = [k for k in student if k.endswith("weight")]
    assert any(not torch.equal(student[k], ck.model_state[k]) for k in weights)
    assert all(
        torch.equal(v, keep.task.ema.model.state_dict()[k]) for k, v in ck.model_state.items()
    )
    assert ck.meta["eval_views"] == ["original", "flip"]
    # the recorded test accuracy is the averaged model's, on each image and its mirror
    test_acc = res.history[-1]["test_acc"]
    assert accuracy(keep.task.ema.model, keep.task.test_loader, flip=True) == test_acc


def test_eval_flip_changes_the_scores_not_the_training(tmp_path):
    flip = fit("classify", tmp_path, "f", "train.eval_flip=true", epochs=1)
    plain = fit("classify", tmp_path, "p", epochs=1)
    a = load_checkpoint(flip.run_dir / "checkpoints" / "last.safetensors").model_state
    b = load_checkpoint(plain.run_dir / "checkpoints" / "last.safetensors").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)  # evaluation draws no randomness
    assert flip.history[-1]["test_loss"] != plain.history[-1]["test_loss"]
    assert flip.history[-1]["train_loss"] == plain.history[-1]["train_loss"]


def test_eval_flip_without_mirror_augmentation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="eval_flip.*mirror"):
        fit("classify", tmp_path, "x", "data.augment=crop", "train.eval_flip=true", epochs=1)


def test_eval_reproduces_the_number_a_mirror_scored_run_logged(tmp_path):
    from cnnlab.inference.scoring import score

    res = fit("classify-ema", tmp_path, "own")
    s = score(res.run_dir, which="last", device="cpu")
    assert s.metrics["tta"]["views"] == ["original", "flip"]
    assert s.metrics["tta"]["accuracy"] == res.history[-1]["test_acc"]
    plain = fit("classify", tmp_path, "plain", epochs=1)
    assert "tta" not in score(plain.run_dir, which="last", device="cpu").metrics
