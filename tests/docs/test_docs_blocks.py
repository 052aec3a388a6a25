"""Every shell block of the README, Getting started and Your own images, typed into a shell.

Each page is followed as a newcomer follows it: in a fresh, empty folder, every line of
every ```` ```bash ```` block goes into one ``bash`` session, in page order, and the next
line is typed only once the previous one has finished — no pause beyond that, so
``cnnlab serve ... &`` followed by ``curl`` is the fastest typist's case. A block preceded
by ``<!-- docs-test: skip (why) -->`` is not run (the comment says why: ``make run``
building a virtual environment, ``pip install`` into the current one, a 233 MB weights
file); a ```` ```text ```` block that starts with ``$ cnnlab ...`` is run and its output
compared with the lines shown.

What a person brings is provided, and nothing else: ``cnnlab`` on the ``PATH`` (the
activated virtual environment; this checkout's ``src`` first), a small folder of labelled
images at ``path/to/images`` and a ``photo.jpg`` (MNIST digits from the embedded sample),
and a tiny Fashion-MNIST in the official format under ``~/data`` (``HOME`` is the fresh
folder). Two substitutions keep parallel runs apart: ``cnnlab serve`` gets ``--port`` of a
free port and ``localhost:8000`` becomes that port.

Then the files and figures each page promises are checked. The blocks train, so this is
a ``slow`` test; the training in them is kept to seconds.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import make_idx_dataset

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/getting-started.md", "docs/your-own-images.md")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b(.*?)-->")

pytestmark = pytest.mark.slow


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None  # why it is not run, or None


def blocks(page: str) -> list[Block]:
    """The fenced blocks of a page, each with the skip note written just above it."""
    out, lines = [], (ROOT / page).read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        note = SKIP.search(prev)
        out.append(
            Block(page, start + 1, lang, "\n".join(lines[i + 1 : j]), note and note.group(1))
        )
        i = j + 1
    return out


def commands(text: str) -> list[str]:
    """The lines a person types: continuation lines (``\\``) joined, comments left in."""
    out, cur = [], ""
    for ln in text.splitlines():
        cur += ln
        if cur.endswith("\\"):
            cur += "\n"  # typed as shown: bash reads on after a backslash-newline
            continue
        if cur.strip() and not cur.lstrip().startswith("#"):
            out.append(cur)
        cur = ""
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shell:
    """One bash session fed line by line; ``type`` returns (exit status, output)."""

    def __init__(self, cwd: Path, env: dict):
        self.p = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.n = 0

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def type(self, command: str, timeout: float = 900) -> tuple[int, str]:
        self.n += 1
        mark = f"__typed_{self.n}__"
        # the status line is typed ahead: bash reads it only once the command has finished
        self.p.stdin.write(f"{command}\necho {mark} $?\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"the shell ended during {command!r}:\n{''.join(out)}")
            head, hit, tail = line.partition(mark)  # output without a final newline: one line
            if hit:
                return int(tail.split()[0]), "".join([*out, head])
            out.append(line)

    def close(self) -> None:
        """Stop the session and whatever it left running (a server started with ``&``)."""
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def provide(home: Path) -> None:
    """What a reader of these pages brings: a folder of images, a photo, Fashion-MNIST."""
    import cnnlab
    from cnnlab.data.folder import write_image_folder

    ds = cnnlab.load_dataset("mnist-sample")
    keep = np.concatenate([np.flatnonzero(ds.train_y.numpy() == c)[:40] for c in range(3)])
    write_image_folder(home / "path/to/images", ds.train_x[keep], ds.train_y[keep], ["0", "1", "2"])
    digit = ds.test_x[int(np.flatnonzero(ds.test_y.numpy() == 1)[0])][0].numpy()
    Image.fromarray(digit).convert("RGB").resize((96, 72)).save(home / "photo.jpg")
    make_idx_dataset(home / "data" / "fashion-mnist", n_train=300, n_test=100)


def follow(page: str, home: Path) -> list[tuple[str, str]]:
    """Type every shell block of ``page`` into one session in ``home``; each command must
    succeed. Returns (command, output) pairs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_DATA"}
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
        MPLBACKEND="Agg",
    )
    done, sh = [], Shell(home, env)
    try:
        for b in blocks(page):
            if b.skip is not None:
                assert b.skip.strip(" ()"), f"{page}:{b.line}: say why the block is skipped"
                continue
            if b.lang in ("bash", "sh", "console", "shell"):
                for cmd in commands(b.text):
                    typed = cmd.replace("localhost:8000", f"localhost:{port}")
                    typed = re.sub(r"^(cnnlab serve \S+)", rf"\1 --port {port}", typed)
                    t = time.monotonic()
                    rc, out = sh.type(typed)
                    print(f"{time.monotonic() - t:6.1f} s  {cmd}")  # shown with -s
                    assert rc == 0, f"{page}:{b.line}: `{cmd}` exited {rc}:\n{out[-3000:]}"
                    done.append((cmd, out))
            elif b.lang == "text" and b.text.startswith("$ cnnlab"):
                cmd, *shown = b.text.splitlines()
                rc, out = sh.type(cmd[2:])
                assert out.strip().splitlines() == shown, f"{page}:{b.line}: `{cmd}` printed {out}"
                assert rc == 2, f"{page}:{b.line}: a shown mistake should exit 2, got {rc}"
    finally:
        sh.close()
    return done


def output(done, prefix: str) -> str:
    outs = [o for c, o in done if c.startswith(prefix)]
    assert outs, f"no command starting {prefix!r} was run"
    return outs[0]


def check_tour(home: Path, done) -> None:
    """What the one-minute tour promises (README and Getting started)."""
    run = home / "runs" / "tour"
    for f in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoints/best.safetensors",
        "report.html",
        "confusion.png",
        "explain.html",
        "explain/attributions.png",
        "export/model.onnx",
        "export/model.onnx.json",
        "export/model.onnx.golden.json",
    ):
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    for f in ("confusion.png", "explain/attributions.png"):
        assert (run / f).read_bytes()[:4] == b"\x89PNG", f
    m = re.search(
        r"test accuracy (0\.\d{4}) after 5 epochs \(best checkpoint: epoch \d by val accuracy "
        r"0\.\d{4}, test accuracy 0\.\d{4}\); [\d.]+ s training, [\d.]+ s wall",
        output(done, "cnnlab train"),
    )
    assert m, output(done, "cnnlab train")
    assert abs(float(m.group(1)) - 0.97) <= 0.01  # "about 0.97"
    assert re.search(r"accuracy 0\.\d{4}  balanced accuracy", output(done, "cnnlab eval"))
    # digits lie on a plain background: explain measures the attribution on the object
    ex = json.loads((run / "explain" / "explain.json").read_text())
    assert set(ex["on_object_fraction"]) == set(ex["methods"]) and ex["object_area"] > 0
    assert "→ PASS" in output(done, "cnnlab export")
    assert '"status":"ok"' in output(done, "curl").replace(" ", "")


def test_readme(tmp_path):
    check_tour(tmp_path, follow("README.md", tmp_path))


def test_getting_started(tmp_path):
    done = follow("docs/getting-started.md", tmp_path)
    check_tour(tmp_path, done)
    shown = [b for b in blocks("docs/getting-started.md") if b.text.startswith("$ cnnlab")]
    assert shown, "the page's mistake example should be run"


def test_your_own_images(tmp_path):
    provide(tmp_path)
    done = follow("docs/your-own-images.md", tmp_path)
    runs = tmp_path / "runs"
    # 0. a folder is a dataset
    split = json.loads((runs / "pets" / "split.json").read_text())
    assert split and (runs / "pets" / "checkpoints" / "best.safetensors").is_file()
    assert "test (" in output(done, "cnnlab eval runs/pets")
    # the class and its probability (a confident model prints 1.000)
    assert re.search(
        r"photo\.jpg: [012] [01]\.\d{3}", output(done, "cnnlab predict runs/pets photo")
    )
    # 1. data check: datacheck.json always, each contact sheet when it has something to show
    for out in (runs / "datacheck-images", runs / "datacheck-fashion-mnist", tmp_path / "check-1"):
        res = json.loads((out / "datacheck.json").read_text())
        s = res["summary"]
        assert (out / "label_issues.png").is_file() == bool(s.get("label_issues")), out
        assert (out / "near_duplicates.png").is_file() == bool(s["near_duplicate_pairs"]), out
    assert (
        "label_issues"
        not in json.loads((tmp_path / "check-1/datacheck.json").read_text())["summary"]
    )  # --no-labels
    # 2. lr-find: the curve and its numbers, alone and before a run
    for name in ("lr-find-lenet5-fashion-mnist", "lr-find-lenet5-mnist-sample"):
        res = json.loads((runs / name / "lr_find.json").read_text())
        assert res["steepest"] > 0 and res["min10"] > 0, name
        assert (runs / name / "lr_find.png").read_bytes()[:4] == b"\x89PNG", name
    auto = [d for d in runs.glob("lenet5-fashion-mnist-*") if (d / "lr_find.json").is_file()]
    assert len(auto) == 1 and (auto[0] / "lr_find.png").is_file()
    import yaml

    assert isinstance(yaml.safe_load((auto[0] / "config.yaml").read_text())["optim"]["lr"], float)
    # 3. fine-tuning from a run: the head is new (10 digit classes → the folder's 3)
    ft = output(done, "cnnlab train --dataset imagefolder --data-dir path/to/images --set model.")
    assert re.search(r"init_from runs/digits: \d+ tensors loaded; classifier re-initialised "
                     r"\(10 → 3 classes\)", ft), ft  # fmt: skip
    assert "epoch 4: features unfrozen" in ft
    # 5. test-time augmentation
    assert re.search(r"TTA \(\d+ views: .*\): accuracy 0\.\d{4} vs 0\.\d{4} without",
                     output(done, "cnnlab eval runs/pets --tta"))  # fmt: skip
    assert re.search(
        r"photo\.jpg: [012] ", output(done, "cnnlab predict runs/pets photo.jpg --tta")
    )


def test_every_skip_says_why_and_a_tour_waits_for_the_server():
    for page in PAGES:
        for b in blocks(page):
            assert b.skip is None or b.skip.strip(" ()"), f"{page}:{b.line}"
    for page in ("README.md", "docs/getting-started.md"):
        tour = [
            c
            for b in blocks(page)
            if b.lang.startswith("bash") and b.skip is None
            for c in commands(b.text)
        ]
        i = next(i for i, c in enumerate(tour) if c.startswith("cnnlab serve"))
        assert re.sub(r"\s+#.*", "", tour[i]).rstrip().endswith("&"), page
        curl = shlex.split(tour[i + 1])
        assert curl[0] == "curl" and "--retry-connrefused" in curl, page
