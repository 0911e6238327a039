"""The media room (issue 33): PyAV is imported only under autotag/media/, and the preview has no
decode loop of its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autotag"


def imported(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (at any depth in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_pyav_is_imported_only_in_the_media_room():
    outside = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if "av" in imported(p) and PACKAGE / "media" not in p.parents]
    assert outside == []
    assert "av" in imported(PACKAGE / "media" / "reader.py")  # the check sees a real import


def test_one_frame_reader_decodes():
    """Only the reader calls a decoder: sampling and the WebM writer read through it."""
    decoding = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                if ".decode(packet)" in p.read_text(encoding="utf-8")]
    assert decoding == ["media/reader.py"]
