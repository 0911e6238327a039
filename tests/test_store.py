"""State store: file records, failures and attempts, embeddings by content hash, thumbnails."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from autotag import cli
from autotag.clip import Embedded, SourceInfo, Window
from autotag.config import load_config
from autotag.store import Store
from tests.clips import GREEN, RED, write_video
from tests.helpers import sidecar, write_config


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


def test_threads_opening_a_fresh_store_together_all_open_it(tmp_path):
    """`--once` and its MQTT thread (or the daemon and `autotag search`) may open a store that
    does not exist yet at the same moment. Turning a fresh file to WAL needs the file to itself
    and SQLite answers "database is locked" at once instead of waiting, so each opener has to
    wait its turn: every one of them opens it, in every round."""
    failures: list[str] = []
    for round_ in range(40):
        path = tmp_path / f"{round_}" / "state.sqlite3"
        start = threading.Barrier(6)

        def open_it() -> None:
            start.wait()
            try:
                Store(path).close()
            except Exception as exc:  # noqa: BLE001 - every failure is counted, whatever it is
                failures.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


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


# -- one truth for "done": a lost or damaged store is rebuilt from the clips -------------------

def damage(store: Path, how: str) -> None:
    if how == "deleted":
        for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
            path.unlink(missing_ok=True)
    elif how == "garbage":
        store.write_bytes(b"not a database, a file someone wrote over it\n" * 200)
    else:  # truncated: a copy cut short, a disk that filled up
        store.write_bytes(store.read_bytes()[:store.stat().st_size // 2])


@pytest.mark.parametrize("how", ["deleted", "garbage", "truncated"])
def test_a_lost_or_damaged_store_is_rebuilt_by_the_command_its_error_names(
        tmp_path, model_dir, run_once, capsys, how):
    """Before: with the store gone every clip was "up to date" by its sidecar, and search said
    to run 'autotag --once DIR', which changed nothing; a damaged one said to set state.path."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "red.mp4", [(RED, 4)])
    write_video(clips / "green.mp4", [(GREEN, 4)])
    config = write_config(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    before = {p.name: sidecar(p) for p in clips.glob("*.mp4")}
    store = load_config(config).state.store_path
    damage(store, how)
    capsys.readouterr()
    if how != "deleted":
        for args in (["--once", "--config", str(config), str(clips)],
                     ["search", "--config", str(config), "red"]):
            assert cli.main(args) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert f"the state store {store} is damaged" in err and "move it aside" in err, err
            assert "writable location" not in err
        store.rename(f"{store}.damaged")  # what the line says to do
    assert run_once(config, clips) == 0
    err = capsys.readouterr().err
    assert err.count("not in the state store") == 1, err
    assert f"2 clips not in the state store ({store}): embedding them again" in err
    assert "2 tagged" in err and "up to date" in err  # both embedded again, none skipped
    hits = json.loads(search_hits(config, capsys))
    assert sorted(Path(h["path"]).name for h in hits) == ["green.mp4", "red.mp4"]
    assert Path(hits[0]["path"]).name == "red.mp4"
    after = {p.name: sidecar(p) for p in clips.glob("*.mp4")}
    assert {n: s["tags"] for n, s in after.items()} == {n: s["tags"] for n, s in before.items()}
    # and now the store and the sidecars agree: a third run has nothing to do
    assert run_once(config, clips) == 0
    assert "not in the state store" not in capsys.readouterr().err


def search_hits(config: Path, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["search", "--config", str(config), "--json", "red"]) == 0
    return capsys.readouterr().out


def test_a_daemon_started_without_its_store_embeds_the_tagged_clips_again(tmp_path, model_dir,
                                                                          embedder, caplog):
    from tests.helpers import Running, log_lines, wait_for, write_daemon_config

    root = tmp_path / "inbox"
    root.mkdir()
    config = write_daemon_config(tmp_path, model_dir)
    with Running(config, root, embedder):
        write_video(root / "red.mp4", [(RED, 2)])
        wait_for(lambda: len(log_lines(config)) == 1)
    damage(load_config(config).state.store_path, "deleted")
    caplog.set_level("INFO", "autotag")
    with Running(config, root, embedder) as run:
        wait_for(lambda: len(run.results) == 1)
        assert run.daemon.wait_idle(30)
    assert [r.status for r in run.results] == ["tagged"]  # embedded again: the store knows it
    assert caplog.text.count("not in the state store") == 1
    assert "1 clip not in the state store" in caplog.text
    store = Store(load_config(config).state.store_path)
    try:
        assert store.file(root / "red.mp4").status == "tagged"
    finally:
        store.close()
