"""Exactly once: a path asked for again while its clip is being worked on, in each of the
orderings the daemon's events can make, is tagged, logged and hooked once per version.

Each test forces its interleaving: the source of paths gives the second request at the moment
named (the first is being tagged from stored embeddings; its windows wait in a partial batch;
it is moved away while its outputs are written), so the race the soak found on a slower CPU
is here on every CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path

from autotag.app import open_app
from autotag.config import load_config
from tests.clips import GREEN, RED, write_video
from tests.helpers import DEADLINE, log_lines, write_config

SECOND_LOOK = 1.0  # s the first clip's tagging waits for a second request to overtake it


def app_for(tmp_path: Path, model_dir: Path, embedder, workers: int = 2):
    config = write_config(tmp_path, model_dir, f"sampling: {{decode_workers: {workers}}}\n")
    return open_app(load_config(config), embedder=embedder), config


def logged(config: Path, path: Path) -> int:
    return sum(line["path"] == str(path) for line in log_lines(config))


class SlowOutputs:
    """The app's outputs, with a hook that runs (once) before the first clip's are written:
    the moment "while the first is being tagged"."""

    def __init__(self, inner, before_first) -> None:
        self.inner = inner
        self.before_first = before_first
        self.calls = 0

    def write_all(self, tagged):
        self.calls += 1
        if self.calls == 1:
            self.before_first(tagged)
        return self.inner.write_all(tagged)


def test_a_renamed_clip_asked_for_twice_while_tagged_from_stored_embeddings_is_tagged_once(
        tmp_path, model_dir, embedder):
    """The soak's failure: a rename gives the new path twice (moved in, then closed or a
    rescan). The second request came while the first was tagged from the store, found neither
    a claim nor a sidecar, and was tagged and logged again."""
    clips = tmp_path / "clips"
    clips.mkdir()
    original = write_video(clips / "clip.mp4", [(RED, 2)])
    app, config = app_for(tmp_path, model_dir, embedder)
    try:
        assert [r.status for r in app.tag([original])] == ["tagged"]
        renamed = clips / "renamed clip.mp4"
        original.rename(renamed)
        second = threading.Event()  # the source may give the path again
        looked = threading.Event()  # the up-to-date rule was asked about the second request
        calls = []

        def fresh(path, st):
            calls.append(path)
            if len(calls) == 2:
                looked.set()
            return app.rule.fresh(path, st)

        def source():
            yield renamed
            second.wait(DEADLINE)
            yield renamed

        def while_tagging(_tagged):
            second.set()
            looked.wait(SECOND_LOOK)  # before the fix the second request overtook the first

        app.tagger.outputs = SlowOutputs(app.tagger.outputs, while_tagging)
        results = list(app.tagger.results(app.engine.embed(source(), fresh=fresh)))
    finally:
        app.close()
    assert [(r.status, r.reason) for r in results] == [("reused", None),
                                                       ("skipped", "up to date")]
    assert logged(config, renamed) == 1


def test_a_clip_asked_for_again_while_its_windows_wait_for_a_batch_is_tagged_once(
        tmp_path, model_dir, embedder):
    """One decoding worker decodes a clip (one window: a partial batch of 8), then gets the
    same path again: it waits its turn, and the model loop must still run the partial batch
    (the waiting worker counts as waiting) or nothing moves."""
    clip = write_video(tmp_path / "red.mp4", [(RED, 2)])
    app, config = app_for(tmp_path, model_dir, embedder, workers=1)
    stop = threading.Event()

    def source():  # the daemon's inbox: the path twice, then a wait for more
        yield clip
        yield clip
        stop.wait(DEADLINE)

    results = []
    try:
        for result in app.tag(source(), stop=stop):
            results.append(result)
            if len(results) == 2:
                stop.set()
    finally:
        app.close()
    assert [(r.status, r.reason) for r in results] == [("tagged", None),
                                                       ("skipped", "up to date")]
    assert logged(config, clip) == 1


def test_a_newer_version_asked_for_while_the_old_one_is_tagged_is_tagged_after_it(
        tmp_path, model_dir, embedder):
    """The second request is for a file rewritten meanwhile: it is not dropped as "in flight"
    (the daemon would wait for its next rescan), it is tagged once the first is done."""
    clip = write_video(tmp_path / "clip.mp4", [(RED, 2)])
    app, config = app_for(tmp_path, model_dir, embedder)
    second = threading.Event()

    def source():
        yield clip
        second.wait(DEADLINE)
        yield clip

    def while_tagging(_tagged):
        write_video(tmp_path / "green.mp4", [(GREEN, 2)]).replace(clip)
        second.set()

    app.tagger.outputs = SlowOutputs(app.tagger.outputs, while_tagging)
    try:
        results = list(app.tag(source()))
    finally:
        app.close()
    assert [r.status for r in results] == ["tagged", "tagged"]
    assert [r.tags[0].label for r in results] == ["red", "green"]
    assert logged(config, clip) == 2  # one line per version


def test_a_clip_moved_away_before_its_outputs_are_written_leaves_none_behind(
        tmp_path, model_dir, embedder):
    """The watcher tells the tagging step a clip is gone (Tagger.forget) while the engine
    still has it: whichever of the two comes second cleans up, and no sidecar, log line or
    store record outlives the clip."""
    clip = write_video(tmp_path / "red.mp4", [(RED, 2)])
    app, config = app_for(tmp_path, model_dir, embedder)
    gone = []
    try:
        outcomes = app.engine.embed([clip], fresh=app.rule.fresh)
        outcome = next(outcomes)  # embedded; its outputs are not written yet
        clip.rename(tmp_path / "elsewhere.mp4")
        gone.append(app.tagger.forget(clip))  # the moved event, before the outputs
        result = app.tagger.result(outcome)
        assert list(outcomes) == []
        record = app.store.file(clip)
    finally:
        app.close()
    assert gone == [None]  # nothing was tagged under the path yet
    assert (result.status, result.reason) == ("skipped",
                                              "moved or deleted before its tags were written")
    assert not Path(f"{clip}.autotag.json").exists()
    assert logged(config, clip) == 0 and record is None


def test_a_clip_moved_away_while_its_outputs_are_written_takes_them_with_it(
        tmp_path, model_dir, embedder):
    """The moved event arrives while the outputs are being written: forgetting waits for the
    tagging step to finish, then removes what it wrote (before, it found no record yet and
    left the sidecar, preview and record of a path that no longer exists)."""
    clip = write_video(tmp_path / "red.mp4", [(RED, 2)])
    app, _ = app_for(tmp_path, model_dir, embedder)
    gone = []
    watcher = threading.Thread(target=lambda: gone.append(app.tagger.forget(clip)),
                               name="test-moved-event")

    def move_away(_tagged):
        clip.rename(tmp_path / "elsewhere.mp4")
        watcher.start()
        watcher.join(SECOND_LOOK)  # before the fix it finished here, finding nothing to do

    app.tagger.outputs = SlowOutputs(app.tagger.outputs, move_away)
    try:
        results = list(app.tag([clip]))
        watcher.join(DEADLINE)
        record = app.store.file(clip)
    finally:
        app.close()
    assert [r.status for r in results] == ["tagged"]
    assert gone and gone[0] is not None and Path(f"{clip}.autotag.json") in gone[0]
    assert not Path(f"{clip}.autotag.json").exists()
    assert not list((tmp_path / "previews").iterdir())
    assert record is None


def test_reloads_in_a_burst_of_arrivals_tag_each_clip_once(tmp_path, model_dir, embedder):
    """SIGHUP three times while 12 clips arrive: each reload stops the tagging loop, carries
    the watcher's pending paths over and rescans; every clip is still logged once."""
    from tests.clips import BLUE
    from tests.helpers import Running, wait_for, write_daemon_config

    root = tmp_path / "inbox"
    root.mkdir()
    config = write_daemon_config(tmp_path, model_dir)
    colours = (RED, GREEN, BLUE)
    with Running(config, root, embedder) as run:
        for i in range(12):
            write_video(root / f"clip{i:02d}.mp4", [(colours[i % 3], 1 + i % 2)])
            if i % 4 == 3:
                run.daemon.request_reload()
        wait_for(lambda: len({line["path"] for line in log_lines(config)}) == 12, DEADLINE * 2)
        assert run.daemon.wait_idle(DEADLINE)
    paths = [line["path"] for line in log_lines(config)]
    assert sorted(paths) == sorted(str(root / f"clip{i:02d}.mp4") for i in range(12))
