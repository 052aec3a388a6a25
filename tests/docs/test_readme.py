"""The README's shape: its tour (the fenced block opened with ```` ```bash tour ````) is
the promised steps, and the page stays short. The tour itself, with every other shell
block, is typed into a shell by ``test_docs_blocks.py``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def tour_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```bash tour\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no ```bash tour block"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_tour_lines_are_the_promised_steps():
    words = [shlex.split(ln)[1] for ln in tour_lines() if ln.startswith("cnnlab ")]
    assert words == ["train", "eval", "explain", "export", "serve"]


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220
