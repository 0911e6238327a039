"""Issue 22, without Ray: the backfill's plan streams (the first clips go to the cluster while
the walk goes on, the plan held is bounded, copies are tagged from stored embeddings, a resumed
run re-does nothing tagged), and the up-to-date pass opens no file of an unchanged clip and
agrees, clip by clip, with the per-file rule. `cluster.run` (the Ray part, tested in
test_cluster.py) is replaced by a stand-in that "embeds" on the driver."""

from __future__ import annotations

import builtins
import io
import json
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from autotag import cluster
from autotag.app import open_app
from autotag.clip import SourceInfo, Window
from autotag.config import load_config
from autotag.engine import STORED, hash_file
from autotag.files import Edge, find_clips
from autotag.passes import fresh_pass
from autotag.store import SCHEMA_VERSION, Store
from tests.clips import GREEN, RED, write_video
from tests.helpers import write_config


class FakeCluster:
    """cluster.run's stand-in: each chunk's clips hashed (as the decode task does) and given
    one window of ones; records the chunks and how far the walk was when each started."""

    def __init__(self, walked: list[int]) -> None:
        self.walked = walked
        self.chunks: list[tuple[int, int]] = []  # (clips, paths walked when it started)
        self.lock = threading.Lock()

    def __call__(self, engine, sources, config, **_):
        with self.lock:
            self.chunks.append((len(sources), self.walked[0]))
        for source in sources:
            assert source.sha256 == "", "a new file was hashed on the driver"
            hashed = SourceInfo(source.path, source.size, source.mtime, hash_file(source.path))
            remote = cluster.Remote(1.0, (Window(0.0, 1.0),), np.zeros((0, 1, 1, 3), np.uint8))
            yield engine.embedded(hashed, remote, np.ones((1, 512), np.float32))


def slow_walk(paths: list[Path], walked: list[int], delay: float = 0.0):
    for path in paths:
        time.sleep(delay)
        walked[0] += 1
        yield path


@pytest.fixture
def library(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    base = write_video(clips / "base.mp4", [(RED, 1)])
    data = base.read_bytes()
    base.unlink()
    for i in range(40):  # one content, forty files of distinct sizes: nothing is a copy
        (clips / f"c{i:02d}.mp4").write_bytes(data + b"\0" * i)
    return clips


def backfill(config: Path, embedder, clips: list[Path], fake: FakeCluster, walked: list[int],
             delay: float = 0.0, stop_after: int | None = None) -> list:
    app = open_app(load_config(config), embedder)
    results = []
    try:
        flow = cluster.backfill(app, slow_walk(clips, walked, delay))
        for result in flow:
            results.append(result)
            if stop_after is not None and len(results) == stop_after:
                flow.close()  # as Ctrl-C leaves the loop
                break
    finally:
        app.close()
    return results


def test_the_first_chunk_goes_to_the_cluster_while_the_walk_goes_on(
        tmp_path, library, model_dir, embedder, monkeypatch):
    walked = [0]
    fake = FakeCluster(walked)
    monkeypatch.setattr(cluster, "run", fake)
    monkeypatch.setattr(cluster, "FIRST_CHUNK", 4)
    monkeypatch.setattr(cluster, "FILL_SECONDS", 0.2)
    config = write_config(tmp_path, model_dir)
    clips = sorted(library.glob("*.mp4"))
    results = backfill(config, embedder, clips, fake, walked, delay=0.05)
    assert sorted(r.path for r in results) == clips and {r.status for r in results} == {"tagged"}
    first_size, walked_then = fake.chunks[0]
    assert first_size <= 4 and walked_then < len(clips) // 2, fake.chunks
    assert sum(size for size, _ in fake.chunks) == len(clips)  # each clip once


def test_the_plan_held_is_bounded_and_a_resumed_run_redoes_nothing(
        tmp_path, library, model_dir, embedder, monkeypatch):
    walked = [0]
    fake = FakeCluster(walked)
    monkeypatch.setattr(cluster, "run", fake)
    for name, value in (("FIRST_CHUNK", 2), ("MAX_CHUNK", 4), ("PLAN_AHEAD", 3),
                        ("EVENTS", 2), ("FILL_SECONDS", 0.1)):
        monkeypatch.setattr(cluster, name, value)
    monkeypatch.setattr(cluster.stages, "PLAN_BATCH", 4)
    config = write_config(tmp_path, model_dir)
    clips = sorted(library.glob("*.mp4"))
    # a slow consumer: the walk may run ahead by what the queues and one chunk hold, no more
    ahead = []
    app = open_app(load_config(config), embedder)
    try:
        flow = cluster.backfill(app, slow_walk(clips, walked))
        for count, _ in enumerate(flow, 1):
            time.sleep(0.01)
            ahead.append(walked[0] - count)
            if count == 15:
                flow.close()  # interrupted
                break
    finally:
        app.close()
    # planned ahead at most: a chunk, PLAN_AHEAD waiting, a plan batch of 4 (1, 2, 4 ...),
    # EVENTS outcomes and the one the planner holds
    assert max(ahead) <= 4 + 3 + 4 + 2 + 2, (ahead, fake.chunks)
    assert max(size for size, _ in fake.chunks) <= 4
    store = Store(tmp_path / "state.sqlite3")
    try:
        tagged = {r.path for r in store.files("tagged")}
    finally:
        store.close()
    assert len(tagged) >= 15
    # resumed: what was tagged is up to date; the rest goes to the cluster, once each
    walked[0] = 0
    fake.chunks.clear()
    results = backfill(config, embedder, clips, fake, walked)
    by_status = {}
    for r in results:
        by_status.setdefault(r.status, set()).add(r.path)
    assert by_status["skipped"] == tagged
    assert by_status.get("tagged", set()) == set(clips) - tagged
    assert sum(size for size, _ in fake.chunks) == len(clips) - len(tagged)
    lines = (tmp_path / "matches.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(map(str, clips))


def test_a_copy_of_stored_content_is_hashed_and_tagged_on_the_driver_only(
        tmp_path, library, model_dir, embedder, monkeypatch):
    walked = [0]
    fake = FakeCluster(walked)
    monkeypatch.setattr(cluster, "run", fake)
    config = write_config(tmp_path, model_dir)
    first = sorted(library.glob("*.mp4"))[:3]
    backfill(config, embedder, first, fake, walked)
    copy = library / "copy of c01.mp4"
    copy.write_bytes(first[1].read_bytes())
    hashed = []
    real = cluster.stages.hash_file
    monkeypatch.setattr(cluster.stages, "hash_file", lambda p: hashed.append(p) or real(p))
    fake.chunks.clear()
    new = sorted(library.glob("*.mp4"))[3:5]  # new content, of sizes no stored clip has
    results = backfill(config, embedder, [*first, copy, *new], fake, walked)
    status = {r.path.name: r.status for r in results}
    assert status == {"c00.mp4": "skipped", "c01.mp4": "skipped", "c02.mp4": "skipped",
                      "copy of c01.mp4": "reused", "c03.mp4": "tagged", "c04.mp4": "tagged"}
    assert hashed == [copy]  # the driver read the copy only; the cluster hashes the rest
    assert sum(size for size, _ in fake.chunks) == 2


class Heard:
    """A passes.Listener that keeps what it was told."""

    def __init__(self) -> None:
        self.window_count = 0
        self.results: list = []
        self.fresh: list[Path] = []

    def up_to_date(self, paths: list[Path]) -> None:
        self.fresh += paths

    def windows(self, count: int) -> None:
        self.window_count += count

    def result(self, result) -> None:
        self.results.append(result)


def test_the_cluster_driver_runs_the_one_pass_and_reports_to_its_listener(
        tmp_path, library, model_dir, embedder, monkeypatch):
    from autotag.passes import run_pass

    walked = [0]
    monkeypatch.setattr(cluster, "run", FakeCluster(walked))
    config = write_config(tmp_path, model_dir)
    clips = sorted(library.glob("*.mp4"))[:4]
    heard = Heard()
    app = open_app(load_config(config), embedder)
    try:
        run_pass(cluster.OnRay(app), iter(clips), heard)
        first = [(r.path, r.status) for r in heard.results]
        heard.results.clear()
        run_pass(cluster.OnRay(app), iter(clips), heard)  # again: every clip is done
    finally:
        app.close()
    # the first run: each clip tagged once, its window counted by the listener as it came
    # back from the cluster; the second: each clip up to date by the same rule
    assert sorted(first) == [(p, "tagged") for p in clips]
    assert heard.window_count == len(clips)
    assert sorted((r.path, r.status, r.reason) for r in heard.results) == \
        [(p, "skipped", "up to date") for p in clips]


def test_the_decode_task_hashes_a_clip_the_driver_did_not(tmp_path):
    from autotag.config import SamplingConfig

    clip = write_video(tmp_path / "a.mp4", [(GREEN, 1)])
    st = clip.stat()
    batch = cluster._columns([cluster.source_row(SourceInfo(clip, st.st_size, st.st_mtime, ""))])
    row = cluster.decode_stage(batch, SamplingConfig())
    assert row["sha256"][0] == hash_file(clip) and not row["error"][0]
    assert len(row["frames"][0]) == 1


# -- the up-to-date pass ----------------------------------------------------------------------

def test_an_unchanged_clip_is_up_to_date_with_no_file_opened(tmp_path, model_dir, run_once,
                                                              monkeypatch, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name, colour in (("red.mp4", RED), ("green.mp4", GREEN)):
        write_video(clips / name, [(colour, 1)])
    config = write_config(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    opened: list[str] = []
    for owner, name in ((builtins, "open"), (io, "open"), (os, "open")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda f, *a, _real=real, **k: opened.append(
            os.fspath(f)) or _real(f, *a, **k))
    capsys.readouterr()
    assert run_once(config, clips) == 0
    assert "2 up to date" in capsys.readouterr().err
    assert not [p for p in opened if p.startswith(str(clips))], opened


def test_up_to_date_clips_are_counted_without_reaching_the_engine(tmp_path, model_dir, run_once,
                                                                  monkeypatch, capsys):
    from autotag.engine import Engine

    clips = tmp_path / "clips"
    clips.mkdir()
    for name, colour in (("red.mp4", RED), ("green.mp4", GREEN), ("blue.mp4", GREEN)):
        write_video(clips / name, [(colour, 1)])
    config = write_config(tmp_path, model_dir)
    assert run_once(config, clips) == 0
    handed: list[Path] = []
    real = Engine.embed

    def embed(self, paths, **kwargs):
        return real(self, (handed.append(p) or p for p in paths), **kwargs)

    monkeypatch.setattr(Engine, "embed", embed)
    changed = clips / "green.mp4"
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    assert run_once(config, clips) == 0
    assert "1 tagged from stored embeddings, 2 up to date" in capsys.readouterr().err
    assert handed == [changed]  # the unchanged two were counted by the up-to-date pass


def test_the_bulk_rule_agrees_with_the_per_file_rule(tmp_path, model_dir, embedder):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(9):
        write_video(clips / f"c{i}.mp4", [((RED, GREEN)[i % 2], 1)])
    config = write_config(tmp_path, model_dir)
    app = open_app(load_config(config), embedder)
    try:
        assert all(r.status == "tagged" for r in app.tag(sorted(clips.glob("*.mp4"))))
        store = app.store
        c = [clips / f"c{i}.mp4" for i in range(9)]
        os.utime(c[1], ns=(0, c[1].stat().st_mtime_ns + 10**9))  # changed mtime
        with c[2].open("ab") as f:  # changed size
            f.write(b"\0")
        st = c[3].stat()
        store.record_failure(c[3], st.st_size, st.st_mtime, "bad")  # failed
        record = store.file(c[4])  # tagged with another model
        store.record_tagged(SourceInfo(c[4], record.size, record.mtime, record.sha256),
                            "another model", record.vocabulary)
        Path(f"{c[5]}.autotag.json").unlink()  # its sidecar gone
        side = Path(f"{c[6]}.autotag.json")  # its sidecar rewritten, same content: fresh
        side.write_text(side.read_text())
        side = Path(f"{c[7]}.autotag.json")  # rewritten by another vocabulary: stale
        data = json.loads(side.read_text())
        side.write_text(json.dumps({**data, "vocabulary": "other"}))
        with sqlite3.connect(store.path) as db:  # c8: a store older than schema 5
            db.execute("UPDATE files SET sidecar = NULL WHERE path = ?", (str(c[8]),))
        db.close()
        items = [(p, p.stat()) for p in c]
        one_by_one = [app.rule.fresh(p, st) for p, st in items]
        assert one_by_one == [True, False, False, False, False, False, True, False, True]
        assert app.rule.fresh_many(items) == one_by_one
        # sidecars found fresh by reading are noted: the next pass stats them only
        assert store.versions([str(c[6]), str(c[8])])[str(c[8])].sidecar == \
            Path(f"{c[8]}.autotag.json").stat().st_mtime_ns
        fresh: list[Path] = []
        stale = list(fresh_pass(app.rule, items, fresh.extend, batch=4))
        assert fresh == [p for p, ok in zip(c, one_by_one) if ok]
        assert stale == [p for p, ok in zip(c, one_by_one) if not ok]
    finally:
        app.close()


def test_a_schema_4_store_gains_the_sidecar_column_and_noting_it_changes_no_clip(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    source = SourceInfo(tmp_path / "a.mp4", 10, 1.0, "ab" * 32)
    store.record_tagged(source, "m", "v", sidecar=123)
    store.close()
    with sqlite3.connect(path) as db:  # back to schema 4: no column, the old trigger
        db.execute("DROP TRIGGER files_updated")
        db.execute("ALTER TABLE files DROP COLUMN sidecar")
        db.execute("ALTER TABLE files DROP COLUMN outputs")
        db.execute("CREATE TRIGGER files_updated AFTER UPDATE ON files BEGIN INSERT INTO "
                   "changes (file_id) VALUES (NEW.id); END")
        db.execute("PRAGMA user_version = 4")
    db.close()
    store = Store(path)
    try:
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # 5 and on
        db.close()
        version = store.versions([str(source.path)])[str(source.path)]
        assert version.sidecar is None and version.size == 10 and version.status == "tagged"
        assert version.outputs is None  # unknown: the sidecar is read once
        seq = store.last_change()
        store.note_sidecars([(456, "digest", str(source.path))])
        assert store.last_change() == seq  # not a change of the clip: no feed row
        noted = store.versions([str(source.path)])[str(source.path)]
        assert (noted.sidecar, noted.outputs) == (456, "digest")
        store.record_tagged(source, "m", "v2", sidecar=789)
        assert store.last_change() == seq + 1
    finally:
        store.close()


def test_the_daemon_scan_asks_the_store_in_batches(tmp_path, monkeypatch):
    from autotag.config import WatchConfig
    from autotag.daemon import watcher

    monkeypatch.setattr(watcher, "SCAN_BATCH", 3)
    for i in range(7):
        (tmp_path / f"c{i}.mp4").write_bytes(b"x" * i)
    asked: list[int] = []

    def known_many(items):
        asked.append(len(items))
        return [st.st_size % 2 == 0 for _, st in items]  # even sizes are known

    w = watcher.Watcher([tmp_path], WatchConfig(), queue.Queue(), known_many=known_many)
    assert w.scan([tmp_path]) == 3
    assert asked == [3, 3, 1]
    assert sorted(p.name for p in w.pending()) == ["c1.mp4", "c3.mp4", "c5.mp4"]


def test_the_daemon_scan_resolves_no_clip_path_under_real_roots(tmp_path, monkeypatch):
    """canonical() resolves a path (a syscall per part); a catch-up under roots that are their
    own real paths asks it of the folder scanned, and of a clip only through a symlink."""
    from autotag.config import WatchConfig
    from autotag.daemon import watcher

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "a.mp4", root / "sub" / "b.mp4", outside / "c.mp4"):
        path.write_bytes(b"x")
    (root / "linked.mp4").symlink_to(outside / "c.mp4")
    (tmp_path / "link-root").symlink_to(root)
    asked: list[Path] = []
    real = watcher.Watcher.canonical
    monkeypatch.setattr(watcher.Watcher, "canonical",
                        lambda self, p: asked.append(p) or real(self, p))
    # a link out of the library is followed here (watch.follow_symlinks_out): what is measured
    # is which paths are resolved, not where the library ends (test_web_security has that)
    follow = WatchConfig(follow_symlinks_out=True)
    w = watcher.Watcher([root], follow, queue.Queue(),
                        known_many=lambda i: [False] * len(i))
    assert w.scan([root]) == 3
    assert asked == [root, root / "linked.mp4"]
    # a root that is a symlink: every path is resolved, and named under the root as given
    asked.clear()
    link = tmp_path / "link-root"
    w = watcher.Watcher([link], follow, queue.Queue(),
                        known_many=lambda i: [False] * len(i))
    assert w.scan([link]) == 3
    assert asked == [link, link / "a.mp4", link / "linked.mp4", link / "sub" / "b.mp4"]
    assert {p.parent.name for p in w.pending()} == {"link-root", "sub"}


def test_the_walk_yields_each_file_once_through_links_and_remembers_folders_only(tmp_path):
    root = tmp_path / "root"
    (root / "z").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    real = root / "z" / "x.mp4"
    real.write_bytes(b"x")
    os.link(real, root / "z" / "hard.mp4")  # a hard link: one file
    os.symlink(real, root / "a-link.mp4")  # met before its target's folder
    os.symlink(tmp_path / "outside", root / "b-dir")  # a linked folder ...
    (tmp_path / "outside" / "o.mp4").write_bytes(b"o")
    os.symlink(tmp_path / "outside" / "o.mp4", root / "c-link.mp4")  # ... and a link into it
    for i in range(5):
        (root / f"plain{i}.mp4").write_bytes(b"p")
    edge = Edge.of([root], follow_out=True)  # links out of the library followed (opted in)
    found = list(find_clips([root], edge=edge))
    assert sorted(p.resolve() for p in found) == sorted(
        {real.resolve(), (tmp_path / "outside" / "o.mp4").resolve(),
         *((root / f"plain{i}.mp4").resolve() for i in range(5))})
    # the link comes first (its target's folder is walked later): the first name found
    assert len(found) == 7 and root / "a-link.mp4" in found
    os.unlink(root / "a-link.mp4")
    os.symlink(real, root / "zz-link.mp4")  # met after its target's folder: not again
    found = list(find_clips([root], edge=edge))
    assert len(found) == 7 and {root / "z" / "hard.mp4", root / "b-dir" / "o.mp4"} <= set(found)


def test_stored_outcome_for_a_path_planned_with_its_known_hash(tmp_path, model_dir, embedder):
    """plan_many: a renamed clip (its hash known from a copy's size) is tagged from the store."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", [(RED, 1)])
    app = open_app(load_config(write_config(tmp_path, model_dir)), embedder)
    try:
        assert [r.status for r in app.tag([clips / "a.mp4"])] == ["tagged"]
        (clips / "a.mp4").rename(clips / "b.mp4")
        sizes = app.store.sizes(app.engine.model)
        planned = list(app.engine.plan_many(
            [clips / "b.mp4"], fresh_many=app.rule.fresh_many,
            hash_if=lambda size: size in sizes))
        assert [p.status for p in planned] == [STORED]
    finally:
        app.close()
