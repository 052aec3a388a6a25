"""How fast the explore page follows a stroke (a benchmark, not a test).

Exports the explore page of a LeNet-5 run, opens it in Debian's headless chromium
(driven by Playwright) and draws strokes with mouse events. For every update the page
records the time from the pointer event to the next painted frame after its update
(forward pass in JavaScript, every feature map, softmax, attribution panel and epoch
view repainted) and the update's own compute time; the result file holds their
percentiles. Goal: ≤ 100 ms per stroke update for LeNet-5 on a 2-core CPU.

    python benchmarks/explore_latency.py [--run runs/<name>] [--strokes 30]
        [--screenshots docs/img] [--out FILE.json]

Without ``--run`` it trains the default LeNet-5 on the embedded MNIST sample for 8
epochs first (what docs/explore.md walks through). ``--screenshots`` also saves the
docs' pictures of that page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record, write_result  # noqa: E402

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def train_docs_run(runs_dir: str) -> Path:
    import cnnlab

    return cnnlab.fit(
        overrides=["train.device=cpu", "train.seed=0"],
        epochs=8,
        name="lenet5-mnist-sample",
        runs_dir=runs_dir,
        quiet=True,
    ).run_dir


def stroke(page, box, x0, y0, dx, dy, moves=15):
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    for i in range(1, moves + 1):
        page.mouse.move(box["x"] + x0 + dx * i / moves, box["y"] + y0 + dy * i / moves)
    page.mouse.up()


def settle(page):
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def measure(page, strokes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    box = page.locator("#pad").bounding_box()
    page.evaluate("explore.latencies.length = 0; explore.computeMs.length = 0")
    for _ in range(strokes):
        page.click("#clear")
        x0, y0 = rng.uniform(40, 240, 2)
        dx, dy = rng.uniform(-120, 120, 2)
        stroke(page, box, x0, y0, dx, dy)
        settle(page)
    lat = np.array(page.evaluate("explore.latencies"))
    comp = np.array(page.evaluate("explore.computeMs"))

    def stats(a):
        return {
            "n": int(a.size),
            "p50": round(float(np.percentile(a, 50)), 2),
            "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2),
            "mean": round(float(a.mean()), 2),
        }

    return {"event_to_painted_frame_ms": stats(lat), "update_compute_ms": stats(comp)}


def screenshots(page, folder: Path) -> list[str]:
    """The docs' pictures: a test image's layers, a conv unit, an FC unit, softmax with
    Grad-CAM, and the filters after the first epoch."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []

    def shot(locator, name):
        p = folder / name
        locator.screenshot(path=str(p))
        im = Image.open(p)
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=128)  # small PNGs
        im.save(p, optimize=True)
        out.append(str(p))

    bundle = page.evaluate("explore.bundle.samples.map(s => s.label)")
    k = bundle.index(7) if 7 in bundle else 0
    page.click(f'#samples figure[data-sample="{k}"]')
    page.wait_for_function(f"explore.sample === {k}")
    settle(page)
    shot(page.locator("#layers-panel"), "explore-layers.png")
    acts = page.evaluate("explore.acts[0].length")
    conv1 = page.evaluate("Array.from(explore.acts[0])")
    ch = 3
    hw = acts // 6
    u = ch * hw + int(np.argmax(np.abs(conv1[ch * hw : (ch + 1) * hw])))
    page.evaluate(f"explore.select(0, {u})")
    page.wait_for_selector(f'#unit[data-layer="0"][data-unit="{u}"] #u-z')
    shot(page.locator("#unit-panel"), "explore-conv-unit.png")
    shot(page.locator("#input-panel"), "explore-input.png")
    page.evaluate("explore.select(2, 3 * 14 * 14 + 5 * 14 + 6)")
    page.wait_for_selector('#unit[data-layer="2"] #u-z')
    shot(page.locator("#unit-panel"), "explore-pool-unit.png")
    fc = page.evaluate("Array.from(explore.acts[7])")
    page.evaluate(f"explore.select(7, {int(np.argmax(fc))})")
    page.wait_for_selector('#unit[data-layer="7"] #contribs')
    shot(page.locator("#unit-panel"), "explore-fc-unit.png")
    page.select_option("#attr-method", "gradcam")
    page.wait_for_function("document.getElementById('attr-note').textContent.includes('Grad')")
    shot(page.locator("#output-panel"), "explore-softmax.png")
    page.evaluate(
        "() => { const e = document.getElementById('epoch'); e.value = '0';"
        " e.dispatchEvent(new Event('input')); }"
    )
    settle(page)
    shot(page.locator("#filters-panel"), "explore-epoch1.png")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a LeNet-5 run directory (default: train the docs' run)")
    ap.add_argument("--strokes", type=int, default=30)
    ap.add_argument("--screenshots", help="also save the docs' screenshots into this folder")
    ap.add_argument("--out", help="result JSON (default benchmarks/results/<date>-cpu<N>/)")
    args = ap.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from cnnlab.deploy.explore import export_page

    result = record("explore-latency", "explore_latency.py", argv, [0])
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_docs_run(tmp)
        page_path, bundle = export_page(run, Path(tmp) / "explore.html")
        result.update(
            model=bundle["model"]["name"],
            dataset=bundle["dataset"],
            parameters=bundle["parameters"],
            mode=bundle["mode"],
            page_bytes=page_path.stat().st_size,
            load_average=list(os.getloadavg()),
        )
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(page_path.as_uri())
            page.wait_for_selector('body[data-ready="1"]', timeout=60000)
            result["browser"] = browser.version
            measure(page, 3, seed=1)  # warm-up: the JIT compiles the loops
            result.update(measure(page, args.strokes))
            if args.screenshots:
                result["screenshots"] = screenshots(page, Path(args.screenshots))
            browser.close()
    p50 = result["event_to_painted_frame_ms"]["p50"]
    p95 = result["event_to_painted_frame_ms"]["p95"]
    print(f"stroke → painted frame: p50 {p50} ms, p95 {p95} ms (goal ≤ 100 ms)")
    write_result(result, args.out, "explore-latency.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
