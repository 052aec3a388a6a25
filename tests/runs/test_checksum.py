"""The checksum covers the tensors and the metadata (epoch, step position, LR, schedule,
RNG, config): a flipped bit anywhere in the header is refused, never loaded silently."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import save_file

from cnnlab.errors import CheckpointError
from cnnlab.runs.checkpoint import _digest, load_checkpoint, save_checkpoint

META = {
    "epoch": 3,
    "position": {"epoch": 4, "step": 11, "lr": 0.003, "seconds": 1.5, "n": 352},
    "schedule": {"step_num": 29, "plateau": {"best": None, "bad": 0, "factor": 1.0}},
    "config": {"optim": {"name": "adam", "lr": 0.003}, "train": {"seed": 0}},
    "rng": {"python": [3, [1, 2, 3], None]},
}


def saved(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    path = save_checkpoint(tmp_path / "last.safetensors", model, META,
                           extra_tensors={"rng.torch": torch.get_rng_state()})  # fmt: skip
    return path, path.read_bytes()


def header_span(raw: bytes) -> tuple[int, int]:
    return 8, 8 + int.from_bytes(raw[:8], "little")


def test_changing_the_step_position_in_the_header_is_refused(tmp_path):
    path, raw = saved(tmp_path)
    assert load_checkpoint(path).meta["position"]["step"] == 11
    a, b = header_span(raw)
    needle = b'\\"step\\": 11'  # the JSON metadata inside the JSON header
    assert raw[a:b].count(needle) == 1
    path.write_bytes(raw[:a] + raw[a:b].replace(needle, needle[:-1] + b"0") + raw[b:])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_random_bit_flips_in_the_header_are_never_accepted_silently(tmp_path):
    path, raw = saved(tmp_path)
    good = load_checkpoint(path)
    a, b = header_span(raw)
    rng = random.Random(4)
    accepted = 0
    for _ in range(300):
        i, bit = rng.randrange(a, b), 1 << rng.randrange(8)
        path.write_bytes(raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1 :])
        try:
            ck = load_checkpoint(path)
        except CheckpointError:
            continue
        # only a flip that changes nothing the checkpoint holds may load (e.g. padding)
        accepted += 1
        assert ck.meta == good.meta
        assert ck.tensors.keys() == good.tensors.keys()
        assert all(torch.equal(ck.tensors[k], good.tensors[k]) for k in ck.tensors)
    assert accepted < 30


def test_a_checkpoint_without_a_checksum_is_refused_and_the_first_format_still_loads(tmp_path):
    t = {"model.w": torch.ones(2)}
    meta = json.dumps({"epoch": 1})
    save_file(t, str(tmp_path / "none.safetensors"), metadata={"cnnlab": meta})
    with pytest.raises(CheckpointError, match="no checksum"):
        load_checkpoint(tmp_path / "none.safetensors")
    save_file(t, str(tmp_path / "v1.safetensors"), metadata={"cnnlab": meta, "sha256": _digest(t)})
    assert load_checkpoint(tmp_path / "v1.safetensors").meta == {"epoch": 1}
