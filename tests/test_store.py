"""State store: file records, failures and attempts, embeddings by content hash, thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autotag.clip import Embedded, SourceInfo, Window
from autotag.store import Store


def embedded(path: Path, sha: str = "ab" * 32, windows: int = 3) -> Embedded:
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 255, (windows, 90, 160, 3), dtype=np.uint8)
    return Embedded(SourceInfo(path, 100, 1.5, sha), 9.6,
                    tuple(Window(i * 3.2, i * 3.2 + 3.2) for i in range(windows)),
                    rng.normal(size=(windows, 512)).astype(np.float32), thumbs)


def test_embeddings_round_trip_by_content_and_model(tmp_path):
    store = Store(tmp_path / "s" / "state.sqlite3")
    clip = embedded(tmp_path / "a.mp4")
    store.save_embedded(clip, "m1")
    copy = SourceInfo(tmp_path / "copy.mp4", 100, 2.0, clip.source.sha256)
    back = store.load_embedded(copy, "m1")
    assert back is not None and back.source.path == copy.path
    np.testing.assert_array_equal(back.embeddings, clip.embeddings)
    assert back.windows == clip.windows and back.duration == clip.duration
    assert back.thumbnails.shape[0] == 3 and back.thumbnails.shape[1] == 120
    assert store.load_embedded(copy, "m2") is None


def test_file_records_and_failure_attempts(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    path = tmp_path / "x.mp4"
    assert store.file(path) is None
    assert store.record_failure(path, 10, 1.0, "broken") == 1
    assert store.record_failure(path, 10, 1.0, "broken") == 2
    assert store.record_failure(path, 11, 2.0, "changed") == 1  # a new version starts over
    record = store.file(path)
    assert (record.status, record.attempts, record.last_error) == ("failed", 1, "changed")
    clip = embedded(path)
    store.record_tagged(clip.source, "m", "v")
    record = store.file(path)
    assert (record.status, record.sha256, record.model, record.vocabulary) == (
        "tagged", clip.source.sha256, "m", "v")
    assert record.matches(100, 1.5) and not record.matches(100, 1.6)


def test_clip_index_joins_files_and_embeddings(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    clips = {}
    for name, sha in (("b.mp4", "b" * 64), ("a.mp4", "a" * 64)):
        clips[name] = embedded(tmp_path / name, sha)
        store.save_embedded(clips[name], "m")
        store.record_tagged(clips[name].source, "m", "v")
    store.record_failure(tmp_path / "bad.mp4", 1, 1.0, "broken")
    records, matrix = store.clip_index("m")
    assert [r.path.name for r in records] == ["a.mp4", "b.mp4"]
    assert matrix.shape == (2, 512) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix[1], clips["b.mp4"].embeddings.mean(axis=0), rtol=1e-6)
    records, matrix = store.clip_index("other")
    assert records == [] and matrix.shape[0] == 0
