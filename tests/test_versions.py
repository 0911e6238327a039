"""The dependencies' versions autotag supports (issue 29): PyAV 18 (Python 3.11) and 19 (3.12+,
without av.open's metadata options), Python 3.11 to 3.13, no tensorflow_hub. CI runs this file
on the oldest Python (PyAV 18) and on the newest (PyAV 19)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import av
import pytest

from autotag import media
from autotag.media import playable, reader
from tests.clips import FFMPEG, ffmpeg

REPO = Path(__file__).resolve().parents[1]
NOT_UTF8 = os.fsdecode(b"title=caf\xe9 \xff")  # Latin-1 bytes, as old cameras write tags


@pytest.fixture
def latin1_tagged(tmp_path) -> Path:
    """A clip whose title tag is not UTF-8: PyAV 18 refuses to open it unless told to replace
    bad bytes, and PyAV 19 has no such option (it always keeps them as surrogates)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg not installed (CI installs it)")
    path = tmp_path / "latin1.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=64x48:d=4:r=10", "-metadata", NOT_UTF8, "-c:v",
           "mpeg4", str(path))
    return path


def test_a_clip_whose_tags_are_not_utf8_is_decoded_on_this_pyav(latin1_tagged):
    sampled = media.sample_clip(latin1_tagged, 2, 10**6)
    assert sampled.frames.shape[0] >= 1 and sampled.duration == pytest.approx(4.0, abs=0.2)
    assert sampled.frames[..., 0].mean() > 200  # red: the pictures, not only the container


def test_the_web_preview_opens_it_on_this_pyav_too(latin1_tagged):
    assert playable.playability(latin1_tagged).reason != ""  # MPEG-4 part 2: not playable


def test_pyav_18_needs_the_option_the_code_passes_it(latin1_tagged):
    """The reason for reader.OPEN_OPTIONS: without it PyAV 18 cannot open the clip."""
    if int(av.__version__.split(".")[0]) >= 19:
        assert reader.OPEN_OPTIONS == {}
        with av.open(str(latin1_tagged)) as container:  # 19 opens it as it is
            assert "caf" in container.metadata["title"]
    else:
        with pytest.raises(UnicodeDecodeError):
            av.open(str(latin1_tagged))


def test_no_tensorflow_hub_and_the_python_range_is_declared(model_dir_tf1):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("tensorflow-hub")]
    assert project["requires-python"] == ">=3.11,<3.14"
    # loading and running the real model's format needs neither (TensorFlow imports neither)
    code = ("import sys; from autotag.model import load_model\n"
            f"model = load_model({str(model_dir_tf1)!r}, runtime='tensorflow')\n"
            "assert model.embed_text(['red']).shape == (1, 512)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow_hub', 'pkg_resources')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
