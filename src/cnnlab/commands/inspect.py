"""cnnlab inspect"""

from __future__ import annotations

from cnnlab.commands._common import add_command, add_overrides_arg, table

ORDER = 61


def register(sub) -> None:
    p = add_command(
        sub,
        "inspect",
        run,
        "print each layer's output shape and parameters for a given input size",
        "Run one dummy image through MODEL and print every layer's output shape, "
        "parameter count and multiply-accumulates. Example: cnnlab inspect alexnet "
        "--input-size 224 --set attention=concat",
    )
    p.add_argument("model", help="model name (see `cnnlab models`)")
    p.add_argument("--input-size", type=int, help="image side in pixels (default: the model's)")
    p.add_argument("--channels", type=int, help="input channels (default: the model's)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    add_overrides_arg(
        p,
        "a model option, e.g. --set activation=relu --set batch_norm=conv",
        dest="options",
        metavar="OPTION=VALUE",
    )


def layer_table(model, channels: int, size: int) -> list[dict]:
    """One row per leaf module (and attention block) in forward order."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cnnlab.models.attention import SelfAttention2d

    rows: list[dict] = []
    hooks = []
    names = {}
    for name, m in model.named_modules():
        leaf = not list(m.children())
        if (leaf or isinstance(m, SelfAttention2d)) and name:
            if any(name.startswith(n + ".") for n in names.values() if n):
                continue  # inside an attention block: reported as one row
            names[m] = name

    def hook(m, inp, out):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else "?"
        rows.append(
            {
                "layer": names[m],
                "type": type(m).__name__,
                "output": shape,
                "params": sum(p.numel() for p in m.parameters()),
            }
        )

    for m in names:
        hooks.append(m.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(torch.zeros(1, channels, size, size))
    finally:
        for h in hooks:
            h.remove()
    per_module = fc.get_flop_counts()
    for r in rows:
        key = f"{type(model).__name__}.{r['layer']}"  # FlopCounterMode's module names
        flops = sum(per_module[key].values()) if key in per_module else 0
        r["macs"] = flops // 2
    return rows


def run(args) -> int:
    from cnnlab.config import normalise_model_name, parse_scalar
    from cnnlab.errors import ConfigError
    from cnnlab.models import MODELS, count_macs, count_params
    from cnnlab.train.input_size import model_for_input

    entry = MODELS.get(normalise_model_name(args.model))
    c, s = entry.default_input
    c = c if args.channels is None else args.channels
    s = s if args.input_size is None else args.input_size
    for flag, v, hi in (
        ("--channels", c, 64),
        ("--input-size", s, 1024),
        ("--classes", args.classes, 100_000),
    ):
        if not 1 <= v <= hi:
            raise ConfigError(f"{flag} must be between 1 and {hi:,}, got {v}")
    opts = {}
    for o in args.options:
        if "=" not in o:
            raise ConfigError(f"--set needs option=value, got {o!r} (e.g. --set activation=relu)")
        k, v = o.split("=", 1)
        opts[k.strip().removeprefix("model.")] = parse_scalar(v)
    model = model_for_input(entry.name, c, args.classes, s, opts, hint="--input-size {n}")
    rows = layer_table(model, c, s)
    table(
        [
            [
                r["layer"],
                r["type"],
                "×".join(str(d) for d in r["output"][1:]) if r["output"] != "?" else "?",
                f"{r['params']:,}" if r["params"] else "",
                f"{r['macs']:,}" if r["macs"] else "",
            ]
            for r in rows
        ],
        ["layer", "type", "output (C×H×W)", "params", "MACs"],
        title=f"{entry.name} on {c}×{s}×{s}",
    )
    print(f"total: {count_params(model):,} parameters, {count_macs(model, c, s):,} MACs per image")
    return 0
