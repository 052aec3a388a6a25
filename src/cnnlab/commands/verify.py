"""cnnlab verify"""

from __future__ import annotations

from cnnlab.commands._common import add_command, add_json_arg, print_json_or

ORDER = 62


def register(sub) -> None:
    p = add_command(
        sub,
        "verify",
        run,
        "check an export against its golden set in its own runtime (exit 1 on a mismatch)",
        "Run the golden images that `cnnlab export` wrote beside MODEL "
        "(<MODEL>.golden.json) through ONNX Runtime, TorchScript or torch.export and compare "
        "the top-k classes and logits. Exit 0: all match; 1: a mismatch; 2: a usage error.",
    )
    p.add_argument("model", help="an exported .onnx, .torchscript.pt or .pt2 file")
    p.add_argument("--golden", help="golden set (default: <MODEL>.golden.json)")
    add_json_arg(p)


def run(args) -> int:
    from cnnlab.deploy.verify import format_verify, verify

    r = verify(args.model, args.golden)
    print_json_or(args, r, lambda: print(format_verify(r)))
    return 0 if r["passed"] else 1
