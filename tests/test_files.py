"""Finding clips: extensions, ignore rules, symlinks (once) and symlink loops (no endless walk)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autotag.files import find_clips, is_clip_name


@pytest.mark.parametrize("name, wanted", [
    ("a.mp4", True), ("A.MP4", True), ("b.GiF", True), ("c.webm", True), ("d.txt", False),
    ("tape.dv", True), ("VTS_01_1.VOB", True), ("MOV001.MOD", True), ("cam.mxf", True),
    (".hidden.mp4", False), ("x.mp4.part", False), ("x.mp4.crdownload", False),
    ("x.mp4~", False), ("._x.mp4", False), ("x.mp4.autotag.json", False),
    (".x.mp4.123.autotag.tmp", False), ("x.tmp", False),
])
def test_clip_names(name, wanted):
    assert is_clip_name(name) is wanted


def test_user_patterns():
    assert not is_clip_name("draft-1.mp4", ["draft-*"])


def test_a_named_file_is_taken_by_its_extension_and_refused_in_one_line_otherwise(tmp_path):
    clip, photo, output = tmp_path / "a.mxf", tmp_path / "b.jpg", tmp_path / "a.mxf.autotag.json"
    for path in (clip, photo, output):
        path.write_bytes(b"x")
    errors: list[tuple[Path, str]] = []
    found = list(find_clips([clip, photo, output], on_error=lambda p, r: errors.append((p, r))))
    assert found == [clip]  # autotag's own output, named too (a shell's *), is skipped quietly
    reason = ".jpg is not a video extension autotag tags (docs/guides/what-it-does.md lists them)"
    assert errors == [(photo, reason)]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_walk_skips_hidden_and_metadata_folders_and_excluded(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "sub" / "b.gif")
    touch(tmp_path / ".hidden" / "c.mp4")
    touch(tmp_path / "@eaDir" / "d.mp4")
    touch(tmp_path / "previews" / "e.mp4")
    found = list(find_clips([tmp_path], exclude=[tmp_path / "previews"]))
    assert found == [tmp_path / "a.mp4", tmp_path / "sub" / "b.gif"]


def test_symlinked_file_once_and_symlink_loop_ends(tmp_path):
    real = touch(tmp_path / "real" / "clip.mp4")
    os.symlink(real, tmp_path / "real" / "link.mp4")
    os.symlink(tmp_path, tmp_path / "real" / "loop")  # a folder containing itself
    found = list(find_clips([tmp_path]))
    assert len(found) == 1 and found[0].resolve() == real


def test_unreadable_folder_is_reported_and_the_rest_found(tmp_path):
    touch(tmp_path / "ok.mp4")
    locked = tmp_path / "locked"
    touch(locked / "x.mp4")
    errors: list[tuple[Path, str]] = []
    from unittest import mock

    real_scandir = os.scandir

    def scandir(path):  # root ignores permissions, so deny the way the kernel would
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    with mock.patch("autotag.files.os.scandir", scandir):
        found = list(find_clips([tmp_path], on_error=lambda p, r: errors.append((p, r))))
    assert found == [tmp_path / "ok.mp4"]
    assert errors == [(locked, "cannot read the folder: Permission denied")]
