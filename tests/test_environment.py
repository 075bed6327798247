"""environment.yml (conda) pins the same versions as requirements.txt (pip)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lstrip("-").strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)$", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_matches_requirements():
    req = _pins((ROOT / "requirements.txt").read_text()) | _pins((ROOT / "requirements-dev.txt").read_text())
    env = _pins((ROOT / "environment.yml").read_text())
    assert req, "requirements.txt pins nothing"
    assert env == req, f"differ: {set(env.items()) ^ set(req.items())}"


def test_environment_yml_comments_every_pin():
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if "==" in line:
            assert "#" in line, f"pin without a comment: {line.strip()}"


def test_students_get_jupyterlab_and_the_kernel_package():
    """`make lab` needs JupyterLab and ipykernel from the pinned requirements (not from a system Jupyter)."""
    req = _pins((ROOT / "requirements.txt").read_text())
    assert "jupyterlab" in req and "ipykernel" in req
