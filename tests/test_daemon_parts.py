"""The daemon's parts, each on its own (no model, no watcher): the result line it shares with
`--once`, its retries' backoff, and the status it hands the web app."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from autotag.cli.common import Reporter
from autotag.clip import Tag
from autotag.config import WatchConfig, parse_config
from autotag.daemon.progress import RECENT_RESULTS, Progress
from autotag.daemon.retries import Retries
from autotag.daemon.service import Daemon
from autotag.passes import MAX_RETRIES
from autotag.store import FileRecord
from autotag.tagging import ClipResult

RESULTS = [
    ClipResult(Path("/clips/a.mp4"), "tagged", tags=(Tag("red", 4.25, 0.9),), windows=2),
    ClipResult(Path("/clips/b.mp4"), "reused", tags=()),
    ClipResult(Path("/clips/c.mp4"), "failed", "not a video"),
    ClipResult(Path("/clips/d.mp4"), "skipped", "failed before: not a video"),
]


def _lines(caplog, say) -> list[tuple[int, str]]:
    caplog.clear()
    for result in RESULTS:
        say(result)
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name.startswith("autotag")]


def test_the_daemon_and_the_terminal_write_a_result_in_the_same_line(tmp_path, caplog):
    config = parse_config(f"vocabulary: [red]\nstate: {{path: '{tmp_path / 'state.sqlite3'}'}}\n",
                          base=tmp_path)
    daemon = Daemon(config, [tmp_path], open_app=None, reload_config=None)
    caplog.set_level(logging.DEBUG, logger="autotag")
    daemons = _lines(caplog, daemon.result)
    with Reporter(None) as reporter:
        terminals = _lines(caplog, reporter.result)
    assert daemons == terminals
    assert (logging.INFO, "tagged /clips/a.mp4: red 4.25") in daemons
    assert (logging.INFO, "reused /clips/b.mp4: no tag") in daemons
    assert (logging.ERROR, "skipping /clips/c.mp4: not a video") in daemons
    assert daemon.counts == reporter.counts


class _Later:
    def __init__(self) -> None:
        self.held: list[tuple[Path, float]] = []

    def retry_later(self, path: Path, delay: float) -> None:
        self.held.append((path, delay))


def test_a_clip_that_did_not_decode_is_held_back_doubling_until_its_retries_run_out():
    retries, later = Retries(WatchConfig(stability_seconds=1.5)), _Later()
    path = Path("/clips/copying.mp4")
    for attempts in range(1, MAX_RETRIES + 2):
        held = retries.schedule(ClipResult(path, "failed", "truncated", retryable=True,
                                           attempts=attempts), later)
        assert held == (attempts <= MAX_RETRIES), attempts
    assert later.held == [(path, 1.5 * 2 ** a) for a in range(1, MAX_RETRIES + 1)]
    # a failure that no retry mends (not retryable) is final at once
    assert not retries.schedule(ClipResult(path, "failed", "not a video", attempts=1), later)


def test_a_retry_asked_before_it_is_due_is_not_spent():
    retries = Retries(WatchConfig(stability_seconds=10.0))

    def record(attempts: int, age: float) -> FileRecord:
        return FileRecord(Path("/c.mp4"), 1, 1.0, None, "failed", attempts, "truncated", None,
                          None, updated=time.time() - age)

    assert not retries.may_retry(record(1, 1.0))  # due after 10 s (half its 20 s delay)
    assert retries.may_retry(record(1, 11.0))
    assert not retries.may_retry(record(MAX_RETRIES + 1, 1e6))  # waits for a change


def test_the_status_counts_every_result_and_shows_the_last_few(tmp_path):
    progress = Progress(tmp_path / "state.sqlite3")
    for i in range(RECENT_RESULTS + 3):
        shown = progress.finished(ClipResult(Path(f"/clips/{i}.mp4"), "tagged"))
        assert shown
    assert not progress.finished(ClipResult(Path("/clips/x.mp4"), "skipped", "up to date"))
    progress.count_windows(7)
    snapshot = progress.snapshot(state="watching", folders=[Path("/clips")], queue=2,
                                 in_progress=1, model={"resident": True})
    assert snapshot["counts"] == {"tagged": RECENT_RESULTS + 3, "skipped": 1}
    assert [r["path"] for r in snapshot["recent"]] == \
        [f"/clips/{i}.mp4" for i in reversed(range(3, RECENT_RESULTS + 3))]
    assert (snapshot["windows"], snapshot["queue"], snapshot["in_progress"]) == (7, 2, 1)
    assert progress.line(2, None) == f"{RECENT_RESULTS + 3} tagged, 0 failed, 2 waiting"
