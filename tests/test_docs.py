"""The docs: the MkDocs site builds with --strict (no broken link, every generated reference
page made from the code), and the README stays a two-minute read that opens with its commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_site_builds_strict_with_generated_reference(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    config = (site / "reference/config/index.html").read_text()
    assert "sampling.max_pixels" in config and "generated:" not in config
    commands = (site / "reference/commands/index.html").read_text()
    assert "autotag search" in commands and "--top" in commands
    http = (site / "reference/http/index.html").read_text()
    assert "/api/clips/{id:int}/media" in http
    sidecar = (site / "reference/sidecar/index.html").read_text()
    assert "source.sha256" in sidecar


def test_readme_is_short_and_opens_with_its_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    blocks = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    assert "autotag --once ./clips" in blocks[0]
    assert "pytest" in blocks[1]
    assert "<!-- test-command -->" in text and "<!-- /test-command -->" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), link
