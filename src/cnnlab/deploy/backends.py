"""What the server runs its model with: the run's own model in torch (saliency and the
explore page need it), or ONNX Runtime — on an exported ``.onnx`` file (no torch needed)
or on a run exported in memory. Every backend maps float pixels in [0, 1] (B, C, S, S) to
logits (B, K), numpy in and out, and carries the export metadata of its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.deploy.bodies import InputError
from cnnlab.deploy.onnx_runtime import ort_session, session_metadata, to_layout
from cnnlab.errors import CnnlabError, choices_msg


class Backend:
    """A model that maps float pixels in [0,1] (B, C, S, S) to logits (B, K) as numpy."""

    name = "?"
    meta: dict
    saliency_available = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def saliency(self, x: np.ndarray, target: int) -> np.ndarray:
        raise InputError(
            f"saliency needs the torch backend (this server runs {self.name}); "
            "start it with --backend torch",
            501,
        )


class TorchBackend(Backend):
    name = "torch"
    saliency_available = True

    # torch loads with this backend only: an exported .onnx is served without it (a
    # serving-only install has no torch at all)
    def __init__(self, run, which: str = "best"):
        from cnnlab.deploy.metadata import export_metadata
        from cnnlab.inference.model import pixel_model

        self.run, self.which = run, which  # the explore page reads the run itself
        self.model, meta = pixel_model(run, which)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.meta = export_metadata(meta, run, "torch", "eager")
        # captum (and the matplotlib it pulls in, ~35 MB resident) loads on the first
        # saliency request, not at start: a server that only classifies never pays for it

    def predict(self, x: np.ndarray) -> np.ndarray:
        from cnnlab.inference.model import numpy_logits

        return numpy_logits(self.model, x)

    def saliency(self, x: np.ndarray, target: int) -> np.ndarray:
        """|∂ logit_target / ∂ pixels| (Simonyan et al. 2014) via Captum, max over channels."""
        import torch
        from captum.attr import Saliency

        xt = torch.from_numpy(x).requires_grad_(True)
        grad = Saliency(self.model).attribute(xt, target=int(target), abs=True)  # (1, C, S, S)
        return grad.amax(1)[0].numpy()


class OnnxBackend(Backend):
    """Any ONNX file ``cnnlab export`` writes: float pixels (B, C, S, S) in [0, 1], or the
    ``--input uint8`` graph (8-bit images in its layout; it converts, resizes and scales
    itself, and gives logits first)."""

    name = "onnx"

    def __init__(self, src, meta: dict | None = None, threads: int = 0):
        self.sess = ort_session(src, threads)
        self.input = self.sess.get_inputs()[0].name
        self.meta = session_metadata(self.sess, src) if meta is None else meta
        inp = self.meta.get("input", {})
        self.uint8_layout = inp.get("layout", "NCHW") if inp.get("dtype") == "uint8" else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.uint8_layout is not None:  # the server's pixels are exact multiples of 1/255
            x = to_layout(np.rint(x * 255).astype(np.uint8), self.uint8_layout)
        return self.sess.run(None, {self.input: x})[0]


def served_input(md: dict) -> tuple[int, int, bool]:
    """(channels, size) the server decodes images to for this model, and whether the
    model inverts light-background images itself (a uint8 export made with --invert)."""
    inp = md["input"]
    if inp.get("dtype") != "uint8":
        return int(inp["shape"][1]), int(inp["shape"][2]), False
    c = inp["shape"][3] if inp.get("layout") == "NHWC" else inp["shape"][1]
    inverts = any(
        st.get("op") == "invert" and st.get("in_graph") for st in md.get("preprocessing", [])
    )
    return int(c), int(inp["model_size"][0]), inverts


def open_backend(target, backend: str = "auto", threads: int = 0, which: str = "best") -> Backend:
    """A run directory / checkpoint (torch or ONNX backend) or an exported ``.onnx`` file."""
    if backend not in ("auto", "torch", "onnx"):
        raise CnnlabError(choices_msg("backend", backend, ("auto", "torch", "onnx")))
    p = Path(target)
    if p.suffix == ".onnx":
        if backend == "torch":
            raise CnnlabError(f"{target} is an ONNX file; serve it with --backend onnx")
        if not p.is_file():
            raise CnnlabError(f"{target}: ONNX file not found")
        return OnnxBackend(p, threads=threads)
    if p.is_file() and p.suffix != ".safetensors":
        raise CnnlabError(
            f"{target}: serve a run directory, a .safetensors checkpoint or a .onnx export"
        )
    import torch  # a run (not an export) needs torch whichever backend serves it

    from cnnlab.deploy.metadata import export_metadata
    from cnnlab.deploy.onnx_export import onnx_bytes
    from cnnlab.deploy.wrappers import example_pixels
    from cnnlab.inference.model import pixel_model

    if threads:
        torch.set_num_threads(threads)
    if backend in ("auto", "torch"):
        return TorchBackend(target, which)
    # ONNX from a run: export in memory (the same graph `cnnlab export` writes)
    wrapper, meta = pixel_model(target, which)
    data, exporter = onnx_bytes(wrapper, example_pixels(meta), "auto")
    return OnnxBackend(data, export_metadata(meta, target, "onnx", exporter), threads)
