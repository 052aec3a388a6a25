"""Image folders with hostile names and files: a file name that is not UTF-8 (training and
--resume crashed with a traceback) and a FIFO named like an image (data check hung)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.cli import main


def make_folder(root: Path) -> Path:
    for c, v in (("a", 40), ("b", 200)):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((16, 16), v + i, np.uint8)).save(root / c / f"{i}.png")
    return root


ARGS = ["--dataset", "imagefolder", "--device", "cpu", "--epochs", "1", "--quiet"]


def test_non_utf8_file_name_is_skipped_with_a_warning(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs")
    bad = os.path.join(os.fsencode(root / "a"), b"bad\xff.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
    runs = tmp_path / "runs"
    rc = main(["train", *ARGS, "--data-dir", str(root), "--runs-dir", str(runs), "--name", "r"])
    err = capsys.readouterr().err
    assert rc == 0 and "bad\\xff.png" in err and "not UTF-8" in err, err
    assert main(["train", "--resume", str(runs / "r"), "--epochs", "2", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_data_check_does_not_hang_on_a_fifo(tmp_path):
    from cnnlab.analysis.datacheck import scan_folder

    root = make_folder(tmp_path / "imgs")
    os.mkfifo(root / "b" / "x.png")
    out = []
    t = threading.Thread(target=lambda: out.append(scan_folder(root)), daemon=True)
    t.start()
    t.join(60)  # it used to block for ever in open()
    assert out, "data check hung on a FIFO"
    assert ("b/x.png", "not a regular file") in out[0].unreadable
