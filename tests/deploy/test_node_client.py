"""A JavaScript client with onnxruntime-node (from the npm registry) loads the uint8 export
and its JSON sidecar — its API cannot read ONNX metadata — and reproduces the Python top-1
on the golden set."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnnlab.deploy import export as ex
from cnnlab.deploy.formats import export_input
from cnnlab.deploy.verify import load_golden

pytestmark = pytest.mark.slow

CLIENT = r"""
const ort = require('onnxruntime-node');
const fs = require('fs');
const [model, sidecar, golden] = process.argv.slice(2);
(async () => {
  const md = JSON.parse(fs.readFileSync(sidecar, 'utf8'));  // dtype, layout, names, classes
  const g = JSON.parse(fs.readFileSync(golden, 'utf8'));
  const sess = await ort.InferenceSession.create(model);
  const out = [];
  for (const im of g.images) {
    const chw = Buffer.from(im.pixels_base64, 'base64');
    const [c, h, w] = im.shape;
    const data = new Uint8Array(c * h * w);
    if (md.input.layout === 'NHWC') {
      for (let k = 0; k < c; k++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++)
        data[(y * w + x) * c + k] = chw[(k * h + y) * w + x];
    } else data.set(chw);
    const dims = md.input.layout === 'NHWC' ? [1, h, w, c] : [1, c, h, w];
    const res = await sess.run({[md.input.name]: new ort.Tensor(md.input.dtype, data, dims)});
    const logits = Array.from(res[md.outputs[0].name].data);
    const probs = Array.from(res[md.outputs[1].name].data);
    const top1 = logits.indexOf(Math.max(...logits));
    out.push({top1, name: md.classes[top1], probsum: probs.reduce((a, b) => a + b, 0)});
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(String(e)); process.exit(1); });
"""


@pytest.fixture(scope="module")
def ort_node(tmp_path_factory):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm not installed")
    d = tmp_path_factory.mktemp("node-client")
    env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip")  # CPU binaries ship in the package
    r = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(d), "onnxruntime-node"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if r.returncode != 0:
        pytest.skip(f"npm install onnxruntime-node failed: {r.stderr.strip().splitlines()[-1:]}")
    (d / "client.js").write_text(CLIENT)
    return d


def test_node_client_reproduces_python_top1(tiny_run, ort_node):
    r = ex.export(tiny_run, "onnx", parity_images=64, input_kind="uint8", layout="NHWC")
    model = Path(r["export"])
    sidecar, golden = Path(r["sidecar_file"]), Path(r["golden_file"])
    out = subprocess.run(
        ["node", str(ort_node / "client.js"), str(model), str(sidecar), str(golden)],
        capture_output=True,
        text=True,
        cwd=ort_node,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    js = json.loads(out.stdout)
    u8, g = load_golden(golden)
    py = ex.load_runner(model, "onnx")(export_input(u8, json.loads(sidecar.read_text())))
    assert [j["top1"] for j in js] == [im["top_k"][0] for im in g["images"]]
    assert [j["top1"] for j in js] == np.argmax(py, 1).tolist()
    assert all(abs(j["probsum"] - 1) < 1e-4 for j in js)
