"""cnnlab generate"""

from __future__ import annotations

from cnnlab.commands._common import add_command, add_run_arg, kwargs_of, output_path

ORDER = 71
MAX_N = 4096  # images in one grid (64 × 64)


def register(sub) -> None:
    p = add_command(
        sub,
        "generate",
        run,
        "sample images from a trained GAN run into a PNG grid",
        "Sample from the generator of a `cnnlab gan` run. For a conditional "
        "model, --class picks the class (name or index); without it the columns cycle "
        "through the classes.",
    )
    add_run_arg(p, "GAN run directory (runs/<name>) or its checkpoint file")
    p.add_argument("--class", dest="cls", help="class name or index (conditional models only)")
    p.add_argument(
        "--n", type=int, default=64, help=f"number of images, at most {MAX_N} (default 64)"
    )
    p.add_argument(
        "--out",
        help="output PNG (default: grid.png in the run directory, numbered grid-2.png, ... "
        "rather than overwriting an earlier one)",
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--nrow", type=int, help="images per row (default: classes or √n)")
    p.add_argument(
        "--truncation",
        type=float,
        help="clamp the noise to [-T, T]: more typical, less varied samples (e.g. 1.0)",
    )
    p.add_argument(
        "--judge",
        metavar="RUN",
        help="also score the generator with this classifier run: feature-space Fréchet "
        "distance (not Inception FID) and class fidelity, on --score-n samples",
    )
    p.add_argument("--score-n", type=int, default=2000, help="samples for --judge (default 2000)")
    p.add_argument("--data-dir", help="dataset folder for --judge (default: the run's)")


def run(args) -> int:
    from cnnlab.analysis.generate import generate, score_run
    from cnnlab.errors import ConfigError
    from cnnlab.report.gan import grid_png
    from cnnlab.runs.files import atomic_write_bytes
    from cnnlab.runs.load import run_dir_of

    for flag, v, hi in (("--n", args.n, MAX_N), ("--score-n", args.score_n, 100_000)):
        if not 1 <= v <= hi:
            raise ConfigError(f"{flag} must be between 1 and {hi:,}, got {v}")
    if args.out and not str(args.out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file, got {str(args.out)!r}")
    s = generate(args.run, **kwargs_of(args, "n", "cls", "seed", "nrow", "truncation"))
    out, note = output_path(args.out, run_dir_of(args.run), "grid.png")
    try:
        atomic_write_bytes(out, grid_png(s.images, s.nrow))
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {s.what} to {out}{note}")
    if args.judge:
        s = score_run(args.run, args.judge, args.score_n, args.truncation, args.seed, args.data_dir)
        line = (
            f"judge scores on {s['n']} samples (truncation {s['truncation']}): feature-space "
            f"Fréchet distance {s['fd']:.2f} (real-vs-real {s['fd_real']:.2f})"
        )
        if "class_fidelity" in s:
            line += f", class fidelity {s['class_fidelity']:.3f}"
        print(line)
    return 0
