"""cnnlab models"""

from __future__ import annotations

from cnnlab.commands._common import add_command, table

ORDER = 60


def register(sub) -> None:
    p = add_command(sub, "models", run, "list models with parameters and multiply-accumulates")
    p.add_argument("pattern", nargs="?", help="glob, e.g. 'alexnet*'")
    p.add_argument("--classes", type=int, default=10, help="classes of the head (default 10)")


def run(args) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.models import MODELS, count_macs, count_params, create_model, list_models

    if not 1 <= args.classes <= 100_000:
        raise ConfigError(f"--classes must be between 1 and 100,000, got {args.classes}")
    if not list_models(args.pattern):
        raise ConfigError(f"no model matches {args.pattern!r}; models: {', '.join(list_models())}")
    rows = []
    for name in list_models(args.pattern):
        e = MODELS.get(name)
        c, s = e.default_input
        m = create_model(name, num_classes=args.classes)
        rows.append(
            [
                name,
                f"{c}×{s}×{s}",
                f"{count_params(m):,}",
                f"{count_macs(m, c, s):,}",
                e.description,
            ]
        )
    table(rows, ["model", "input", "params", "MACs/image", "description"])
    return 0
