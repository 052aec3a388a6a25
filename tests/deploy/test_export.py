import json

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data.datasets import load_dataset
from cnnlab.deploy import export as ex
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, list_models
from cnnlab.models.base import MODELS
from cnnlab.runs.checkpoint import save_checkpoint


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported-program"])
def test_export_parity_metadata_dynamic_batch(tiny_run, fmt):
    r = ex.export(tiny_run, fmt, parity_images=64)
    out = tiny_run / "export" / ("model" + ex.FORMATS[fmt])
    assert r["passed"] and out.is_file() and r["images"] == 64
    assert r["max_abs_logit_diff"] <= 1e-4 and r["top1_agreement"] == 1.0
    saved = json.loads((out.parent / (out.name + ".parity.json")).read_text())
    assert saved["max_abs_logit_diff"] == r["max_abs_logit_diff"] and saved["passed"]
    # no temp files left behind
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.name + ".parity.json"]
    )

    md = ex.read_export_metadata(out)
    assert md["classes"] == [f"class{i}" for i in range(10)]
    assert md["input"]["shape"] == ["batch", 1, 28, 28] and md["input"]["range"] == [0.0, 1.0]
    assert md["normalization"]["folded"] and len(md["normalization"]["mean"]) == 1
    assert md["source_run"] == str(tiny_run.resolve()) and md["cnnlab_version"]

    # the export takes [0,1] pixels: it equals model((x - mean) / std) for any batch size
    from cnnlab.runs.load import load_model

    model, meta = load_model(tiny_run)
    mean = torch.tensor(meta["input"]["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(meta["input"]["std"]).reshape(1, -1, 1, 1)
    run = ex.load_runner(out, fmt)
    for b in (1, 5, 17):
        x = torch.rand(b, 1, 28, 28)
        with torch.no_grad():
            ref = model((x - mean) / std).numpy()
        got = run(x.numpy())
        assert got.shape == (b, 10) and np.abs(got - ref).max() <= 1e-4


def test_onnx_metadata_props(tiny_run):
    import onnx

    ex.export(tiny_run, "onnx", parity_images=16)
    m = onnx.load(str(tiny_run / "export" / "model.onnx"))
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["classes"])[0] == "class0"
    assert json.loads(props["input_shape"]) == ["batch", 1, 28, 28]
    assert {"normalization", "source_run", "cnnlab_version", "cnnlab"} <= props.keys()
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


@pytest.mark.parametrize("quant", ["dynamic", "static"])
def test_int8_reports_accuracy_delta(tiny_run, quant):
    r = ex.export(tiny_run, "onnx", int8=True, quant=quant, parity_images=64)
    out = tiny_run / "export" / "model.int8.onnx"
    assert out.is_file() and r["int8"] == quant
    assert r["accuracy_delta"] == pytest.approx(r["accuracy_export"] - r["accuracy_reference"])
    # quantised: smaller, still close to the fp32 model's answers
    assert r["bytes"] < (tiny_run / "checkpoints" / "best.safetensors").stat().st_size
    assert r["top1_agreement"] >= 0.8
    assert ex.read_export_metadata(out)["int8"] == quant


def test_parity_failure_writes_nothing(tiny_run, monkeypatch):
    real = ex.load_runner

    def broken(data, fmt, threads=0):
        f = real(data, fmt, threads)
        return lambda x: f(x) + 1e-2  # a wrong export

    monkeypatch.setattr(ex, "load_runner", broken)
    with pytest.raises(CnnlabError, match="parity check failed"):
        ex.export(tiny_run, "exported-program", parity_images=16)
    files = [p.name for p in (tiny_run / "export").iterdir()]
    assert files == ["model.pt2.parity.json"]  # the report only, no model


def test_export_errors(tiny_run, capsys):
    with pytest.raises(CnnlabError, match="--int8 needs --format onnx"):
        ex.export(tiny_run, "torchscript", int8=True)
    with pytest.raises(CnnlabError, match="unknown export format"):
        ex.export(tiny_run, "tflite")
    assert main(["export", str(tiny_run / "nope")]) == 2
    assert "cnnlab: error:" in capsys.readouterr().err


def test_cli_export(tiny_run, capsys):
    out = tiny_run / "m.pt2"
    assert (
        main(
            [
                "export",
                str(tiny_run),
                "--format",
                "exported-program",
                "--out",
                str(out),
                "--parity-images",
                "32",
            ]
        )
        == 0
    )
    txt = capsys.readouterr().out
    assert "PASS" in txt and "max |Δlogit|" in txt and out.is_file()
    d = tiny_run / "outdir"
    d.mkdir()
    assert (
        main(
            [
                "export",
                str(tiny_run),
                "--format",
                "torchscript",
                "--out",
                str(d),
                "--parity-images",
                "16",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["passed"]
    assert (d / "model.torchscript.pt").is_file()


SMALL = [n for n in list_models() if MODELS.get(n).default_input[1] <= 64]


@pytest.mark.parametrize("name", SMALL)
def test_every_registered_model_exports(tmp_path, name):
    """Untrained weights are enough to prove the export is generic and exact."""
    c, s = MODELS.get(name).default_input
    torch.manual_seed(0)
    model = create_model(name, in_channels=c, num_classes=10, input_size=s)
    ds = load_dataset("synthetic", num_train=8, num_test=24, channels=c, size=s)
    meta = {
        "model": model.cnnlab_args,
        "classes": ds.classes,
        "dataset": "synthetic",
        "input": {"channels": c, "size": s, "mean": list(ds.mean), "std": list(ds.std)},
        "config": {
            "data": {"name": "synthetic", "num_train": 8, "num_test": 24, "channels": c, "size": s}
        },
    }
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.safetensors", model.eval(), meta)
    for fmt in ("onnx", "exported-program"):
        r = ex.export(run, fmt)
        assert r["passed"] and r["images"] == 24, (fmt, r)
