"""The drawing page in a real browser: Debian's chromium, headless, driven by Playwright."""

import os
import shutil
import socket
import threading
import time

import pytest

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")
ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def server(tiny_run):
    import uvicorn

    from cnnlab.deploy.serve import create_app, open_backend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(open_backend(tiny_run)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def test_draw_a_stroke_and_see_predictions(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 560})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            page.wait_for_selector('body[data-ready="1"]', timeout=20000)
            box = page.locator("#pad").bounding_box()
            x0, y0 = box["x"], box["y"]
            page.mouse.move(x0 + 140, y0 + 40)
            page.mouse.down()
            for i in range(25):  # a vertical stroke, drawn with mouse events
                page.mouse.move(x0 + 140 + i, y0 + 40 + 8 * i)
            page.mouse.up()
            page.wait_for_selector("#top3 li.pred", timeout=20000)
            page.wait_for_function("document.querySelectorAll('tr.prob-row').length == 10")
            top = page.eval_on_selector_all("#top3 li.pred", "els => els.map(e => e.textContent)")
            probs = page.eval_on_selector_all("tr.prob-row", "els => els.map(e => +e.dataset.prob)")
            assert len(top) == 3 and top[0].startswith("class")
            assert sum(probs) == pytest.approx(1.0, abs=1e-4)
            assert probs == sorted(probs, reverse=True)
            # the heat-map was painted (not all black)
            lit = page.evaluate(
                "(() => { const d = document.getElementById('heat').getContext('2d')"
                ".getImageData(0, 0, 280, 280).data; let n = 0;"
                " for (let i = 0; i < d.length; i += 4) if (d[i] > 40) n++; return n; })()"
            )
            assert lit > 100
            page.screenshot(path=str(tmp_path / "page.png"))
            assert not errors, errors
        finally:
            browser.close()


def test_phone_layout_shows_the_prediction_above_the_canvas(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(
                viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
            )
            failed = []
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
            page.goto(server + "/")
            page.wait_for_selector('body[data-ready="1"]', timeout=20000)
            res = page.locator("#results").bounding_box()
            pad = page.locator("#pad").bounding_box()
            assert res["y"] + res["height"] <= pad["y"] + 1, (res, pad)
            assert pad["x"] + pad["width"] <= 390 and pad["y"] + pad["height"] <= 844
            assert not failed, failed  # favicon included
        finally:
            browser.close()
