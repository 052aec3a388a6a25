"""cnnlab export"""

from __future__ import annotations

from cnnlab.commands._common import (
    add_checkpoint_arg,
    add_choice,
    add_command,
    add_data_args,
    add_json_arg,
    add_run_arg,
    print_json_or,
)

ORDER = 60


def register(sub) -> None:
    p = add_command(
        sub,
        "export",
        run,
        "export a run to ONNX / TorchScript / torch.export, checked against the original",
        "Export in eval mode with the normalisation folded in (input: float "
        "pixels in [0,1], shape (batch, C, S, S), batch dynamic; or --input uint8 with the "
        "preprocessing in the graph) and metadata embedded (separate ONNX metadata keys and a "
        "<file>.json sidecar), plus a golden set <file>.golden.json for `cnnlab verify`. "
        "Parity with the original model is checked on the run's real test images every time "
        "and saved next to the export as <file>.parity.json.",
    )
    add_run_arg(p)
    add_choice(
        p, "--format", ["onnx", "torchscript", "exported-program"], "output format (default onnx)"
    )
    p.add_argument("--out", help="output file (default <run>/export/model.<ext>)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX Runtime int8 quantisation; reports the test-accuracy delta",
    )
    add_choice(
        p,
        "--quant",
        ["static", "dynamic"],
        "with --int8: static (calibrated on 512 training images, QDQ) or dynamic",
    )
    p.add_argument(
        "--parity-images",
        type=int,
        default=10000,
        help="test images used for the parity check (default 10000; 0 = all)",
    )
    add_choice(
        p,
        "--onnx-exporter",
        ["auto", "dynamo", "legacy"],
        "torch.onnx exporter: auto = dynamo (torch.export based), legacy on failure",
    )
    add_choice(
        p,
        "--input",
        ["float", "uint8"],
        "float: float32 pixels in [0,1] (B,C,S,S); uint8: decoded 8-bit images of any size, "
        "resized/converted/scaled in the graph, logits and probabilities out",
        dest="input_kind",
    )
    add_choice(p, "--layout", ["NHWC", "NCHW"], "with --input uint8 (default NHWC)")
    p.add_argument(
        "--input-channels",
        type=int,
        choices=[1, 3],
        help="with --input uint8: channels the client sends (3 into a grey model: converted in the graph)",
    )
    p.add_argument(
        "--invert",
        action="store_true",
        help="with --input uint8: invert light-background images in the graph (invert=auto)",
    )
    p.add_argument(
        "--golden",
        type=int,
        default=8,
        help="test images written beside the export for `cnnlab verify` (default 8; 0 = none)",
    )
    add_data_args(p, data_dir="where the run's dataset lives (default: the run's)")
    add_checkpoint_arg(p)
    add_json_arg(p)


def run(args) -> int:
    from cnnlab.deploy.export import export, format_report

    if args.parity_images < 0:
        from cnnlab.errors import CnnlabError

        raise CnnlabError("--parity-images must be ≥ 0 (0 = the whole test set)")
    r = export(
        args.run,
        args.format,
        out=args.out,
        int8=args.int8,
        quant=args.quant,
        data_dir=args.data_dir,
        parity_images=args.parity_images or None,
        which=args.which,
        onnx_exporter=args.onnx_exporter,
        input_kind=args.input_kind,
        layout=args.layout,
        input_channels=args.input_channels,
        invert=args.invert,
        golden=args.golden,
    )
    print_json_or(args, r, lambda: print(format_report(r)))
    return 0
