"""cnnlab generate"""

from __future__ import annotations

from ._common import add_run_arg

ORDER = 71


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="sample images from a trained GAN run into a PNG grid",
        description="Sample from the generator of a `cnnlab gan` run. For a conditional "
        "model, --class picks the class (name or index); without it the columns cycle "
        "through the classes.",
    )
    add_run_arg(p, "GAN run directory (runs/<name>) or its checkpoint file")
    p.add_argument("--class", dest="cls", help="class name or index (conditional models only)")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", default="grid.png", help="output PNG (default grid.png)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--nrow", type=int, help="images per row (default: classes or √n)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.gan import generate

    path, info = generate(
        args.run, n=args.n, cls=args.cls, out=args.out, seed=args.seed, nrow=args.nrow
    )
    print(f"wrote {info} to {path}")
    return 0
