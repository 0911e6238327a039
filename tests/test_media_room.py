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


def test_the_preview_decodes_on_frame_threads_and_tagging_on_one(tmp_path):
    """The preview's reader (a person waits for it) lets FFmpeg thread its decoding; window
    sampling (the engine's workers already fill the cores) decodes on one thread."""
    import subprocess

    from autotag.media import reader, webm

    clip = tmp_path / "c.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                    "-t", "1", "-pix_fmt", "yuv420p", str(clip)], check=True)
    made = {}
    for name, threads in (("preview", webm.DECODE_THREADS), ("tagging", reader.DECODE_THREADS)):
        with reader.open_input(clip) as container:
            stream = container.streams.video[0]
            reader.FrameReader(container, stream, 10**9, threads=threads)
            kind = stream.codec_context.thread_type
            made[name] = getattr(kind, "name", kind)  # an enum in PyAV 14 and up
    assert made == {"preview": "AUTO", "tagging": "NONE"}
