"""Exports that a client can trust: ``verify`` catches any change to the file (a content
hash beside the numeric check), a full disk leaves no partial set, and the sidecar names
every step a client must do (EXIF orientation) and only those."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.deploy import export as ex
from cnnlab.deploy.formats import read_export_metadata
from cnnlab.deploy.verify import verify


def test_single_bit_weight_flips_fail_verify(tiny_run, capsys):
    """24 single-bit flips spread over the weights: the numeric golden check alone let 15 of
    24 pass; each one changes the hash."""
    r = ex.export(tiny_run, "onnx", parity_images=64)
    model = Path(r["export"])
    assert verify(model)["passed"] and r["sha256"] == ex.file_sha256(model)
    side = json.loads(ex.companion(model, "meta").read_text())
    assert side["sha256"] == r["sha256"]
    orig = model.read_bytes()
    rng = np.random.default_rng(0)
    n = len(orig)
    failed = 0
    numeric_only = 0
    for pos in rng.integers(n // 4, n - 64, 24):
        bad = bytearray(orig)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        model.write_bytes(bytes(bad))
        try:
            res = verify(model)
        except Exception:  # noqa: BLE001 - a flip that breaks the protobuf: refused too
            failed += 1
            continue
        failed += not res["passed"]
        numeric_only += not res["mismatches"]
        assert res["passed"] or res["sha256_mismatch"] == ["golden set", "sidecar"]
    model.write_bytes(orig)
    assert failed == 24, f"{24 - failed} flips passed verify"
    print(f"{numeric_only} of 24 flips pass the numeric check alone")
    assert main(["verify", str(model)]) == 0
    model.write_bytes(orig[:-1] + bytes([orig[-1] ^ 1]))
    assert main(["verify", str(model)]) == 1
    assert "CHANGED" in capsys.readouterr().out


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    name = f"cnnlab-test-{uuid.uuid4().hex[:8]}"
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", name, str(path)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def test_full_disk_during_export_leaves_no_partial_set(tiny_run, tmp_path):
    """A disk with room for the model but not its sidecar: the model used to be written
    alone; now nothing is (and an earlier export in the folder stays whole)."""
    size = len(Path(ex.export(tiny_run, "onnx", check=False, golden=0)["export"]).read_bytes())
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "2m"):
        pytest.skip("mounting a tmpfs is not allowed here (needs root)")
    try:
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        page = 4096
        room = (size + page - 1) // page * page + page  # the model, one page to spare
        (mnt / "filler").write_bytes(b"\0" * (free - room))
        with pytest.raises(ex.CnnlabError, match="nothing exported"):
            ex.export(tiny_run, "onnx", out=mnt / "m.onnx", parity_images=16, golden=8)
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sidecar_names_exif_orientation_and_only_the_steps_in_the_graph(tiny_run):
    r = ex.export(tiny_run, "onnx", check=False, input_kind="uint8", golden=0)
    steps = json.loads(ex.companion(Path(r["export"]), "meta").read_text())["preprocessing"]
    ops = [s["op"] for s in steps]
    assert ops.index("decode") < ops.index("exif_orientation") < ops.index("resize")
    assert not steps[ops.index("exif_orientation")]["in_graph"]
    assert not steps[ops.index("convert")]["in_graph"]  # a 1-channel graph: the client converts
    r3 = ex.export(tiny_run, "onnx", check=False, input_kind="uint8", input_channels=3, golden=0)
    steps3 = read_export_metadata(r3["export"])["preprocessing"]
    assert next(s for s in steps3 if s["op"] == "convert")["in_graph"]  # RGB in: the graph
