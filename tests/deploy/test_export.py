import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.cli import main
from cnnlab.data.datasets import load_dataset
from cnnlab.deploy import export as ex
from cnnlab.deploy.formats import read_export_metadata
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
    # no temp files left behind: the model, its sidecar, golden set and parity report
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.name + ".json", out.name + ".golden.json", out.name + ".parity.json"]
    )
    assert (out.stat().st_mode & 0o777) == 0o644  # as docs/deployment.md says

    md = read_export_metadata(out)
    assert md["classes"] == [f"class{i}" for i in range(10)]
    assert md["input"]["shape"] == ["batch", 1, 28, 28] and md["input"]["range"] == [0.0, 1.0]
    assert md["normalization"]["folded"] and len(md["normalization"]["mean"]) == 1
    assert md["source_run"] == tiny_run.name and md["cnnlab_version"]  # no local paths
    assert md["checkpoint"] == "checkpoints/best.safetensors"
    side = json.loads((out.parent / (out.name + ".json")).read_text())  # the sidecar:
    assert side.pop("sha256") == ex.file_sha256(out) and side == md  # + the file's hash

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
    assert {"normalization", "source_run", "cnnlab_version", "cnnlab", "model"} <= props.keys()
    # what a client must send and what it gets, each a key of its own
    assert props["input_dtype"] == "float32" and props["input_layout"] == "NCHW"
    assert json.loads(props["input_range"]) == [0.0, 1.0]
    assert "logits" in json.loads(props["output_meaning"])["logits"]
    steps = [st["op"] for st in json.loads(props["preprocessing"])]
    assert steps == [
        "decode",
        "exif_orientation",
        "alpha_composite",
        "convert",
        "resize",
        "invert",
        "scale",
        "layout",
    ]
    assert "/" not in props["source_run"]
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
    assert read_export_metadata(out)["int8"] == quant


def test_parity_failure_writes_nothing(tiny_run, monkeypatch):
    real = ex.load_runner

    def broken(data, fmt, threads=0):  # noqa: ARG001
        f = real(data, fmt, threads)
        return lambda x: f(x) + 1e-2  # a wrong export

    monkeypatch.setattr(ex, "load_runner", broken)
    with pytest.raises(CnnlabError, match="parity check failed"):
        ex.export(tiny_run, "exported-program", parity_images=16)
    files = [p.name for p in (tiny_run / "export").iterdir()]
    assert files == ["model.pt2.parity.json"]  # the report only: no model, sidecar, golden


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


@pytest.mark.parametrize(
    "fmt,layout",
    [
        pytest.param("onnx", "NHWC", marks=pytest.mark.slow),
        ("torchscript", "NCHW"),
        pytest.param("exported-program", "NHWC", marks=pytest.mark.slow),
    ],
)
def test_uint8_export_has_the_preprocessing_in_the_graph(tiny_run, fmt, layout):
    r = ex.export(tiny_run, fmt, parity_images=32, input_kind="uint8", layout=layout)
    out = Path(r["export"])
    assert r["passed"] and out.name.startswith("model.uint8")
    md = read_export_metadata(out)
    assert md["input"]["dtype"] == "uint8" and md["input"]["layout"] == layout
    assert [o["name"] for o in md["outputs"]] == ["logits", "probabilities"]
    in_graph = {st["op"] for st in md["preprocessing"] if st["in_graph"]}
    assert {"resize", "scale"} <= in_graph  # grey in, grey model: no conversion in the graph
    assert "convert" not in in_graph and md["input"]["shape"][1 if layout == "NCHW" else 3] == 1
    # any size: a 40 × 50 uint8 image gives logits and probabilities that sum to 1
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 40, 50, 1) if layout == "NHWC" else (2, 1, 40, 50), np.uint8)
    logits = ex.load_runner(out, fmt)(img)
    assert logits.shape == (2, 10)
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        lg, pr = sess.run(None, {"images": img})
        assert np.allclose(pr.sum(1), 1, atol=1e-5) and np.allclose(lg, logits)
        # the same picture at the model's size equals the float export fed x / 255
        small = img[:, :28, :28]
        fl = ex.export(tiny_run, "onnx", parity_images=16)
        ref = ex.load_runner(fl["export"], "onnx")(small.transpose(0, 3, 1, 2) / np.float32(255))
        assert np.abs(sess.run(None, {"images": np.ascontiguousarray(small)})[0] - ref).max() < 1e-3


@pytest.mark.slow
def test_exports_refuse_wrong_dtypes(tiny_run):
    """TorchScript used to take uint8 silently and mis-scale it; now each runtime refuses."""
    f32 = np.zeros((1, 1, 28, 28), np.float32)
    u8 = np.zeros((1, 1, 28, 28), np.uint8)
    for fmt in ("onnx", "torchscript", "exported-program"):
        r = ex.export(tiny_run, fmt, parity_images=16)
        run = ex.load_runner(r["export"], fmt)
        assert run(f32).shape == (1, 10)
        with pytest.raises(Exception, match="(?i)dtype|float32|type"):
            run(u8)
    r = ex.export(tiny_run, "torchscript", parity_images=16, input_kind="uint8", layout="NCHW")
    with pytest.raises(Exception, match="uint8"):
        ex.load_runner(r["export"], "torchscript")(f32)


def test_verify_golden_set(tiny_run, capsys):
    r = ex.export(tiny_run, "torchscript", parity_images=64)
    model = r["export"]
    gold = json.loads(Path(r["golden_file"]).read_text())
    assert len(gold["images"]) == 8 and gold["top_k"] == 3
    assert main(["verify", model]) == 0
    assert "PASS" in capsys.readouterr().out
    # a runtime that answers differently is caught: exit 1, one line per mismatch
    first = gold["images"][0]
    first["top_k"] = first["top_k"][::-1]
    bad = Path(model).with_name("tampered.golden.json")
    bad.write_text(json.dumps(gold))
    assert main(["verify", model, "--golden", str(bad)]) == 1
    assert "MISMATCH image 0" in capsys.readouterr().out
    assert main(["verify", str(tiny_run / "nope.pt2")]) == 2
    assert main(["verify", model, "--golden", str(tiny_run / "nope.json")]) == 2
    assert capsys.readouterr().err.count("cnnlab: error:") == 2
    r = ex.export(tiny_run, "exported-program", parity_images=32, input_kind="uint8")
    assert main(["verify", r["export"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
