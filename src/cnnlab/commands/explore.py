"""cnnlab explore"""

from __future__ import annotations

from cnnlab.commands._common import add_checkpoint_arg, add_choice, add_command, add_run_arg

ORDER = 45


def register(sub) -> None:
    p = add_command(
        sub,
        "explore",
        run,
        "an interactive, offline page that takes a run's model apart layer by layer",
        "Write <run>/explore.html: draw, upload or pick a test image and see every "
        "layer's feature maps, click a unit for its arithmetic with the real numbers "
        "(kernel × patch, pooling window, FC contributions, softmax), first-layer "
        "filters over the epochs and saliency / Grad-CAM per class. Small models run in "
        "the page itself; large ones carry precomputed activations (or use "
        "`cnnlab serve RUN` and open /explore). No network needed.",
    )
    add_run_arg(p)
    p.add_argument("-o", "--out", help="the HTML file to write (default <run>/explore.html)")
    p.add_argument(
        "--images", type=int, default=12, help="test images to embed, one per class first (12)"
    )
    add_choice(
        p,
        "--mode",
        ["auto", "weights", "activations"],
        "weights: the page runs the model (default up to 2M parameters); activations: "
        "precomputed for the test images",
    )
    p.add_argument(
        "--no-attribution", action="store_true", help="leave the saliency/Grad-CAM maps out"
    )
    p.add_argument("--data-dir", help="folder holding the run's dataset (for the test images)")
    p.add_argument(
        "--download", action="store_true", help="download the dataset if it is not found"
    )
    add_checkpoint_arg(p, help="checkpoint")


def run(args) -> int:
    from cnnlab.deploy.explore import export_page

    path, bundle = export_page(
        args.run,
        args.out,
        args.which,
        args.images,
        args.mode,
        args.data_dir,
        args.download,
        not args.no_attribution,
    )
    size = path.stat().st_size
    snaps = len(bundle["snapshots"])
    print(
        f"wrote {path} ({size / 1e6:.1f} MB; {bundle['mode']} mode, {len(bundle['layers'])} "
        f"operations, {len(bundle['samples'])} test images, {snaps} epoch snapshots)"
    )
    if bundle["samples_note"]:
        print(bundle["samples_note"])
    return 0
