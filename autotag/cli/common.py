"""What every command shares: config loading, the app factory's errors, logging, progress, summary.

The library logs; only the CLI decides how: rich on a terminal, plain lines under a service.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from autotag.errors import AutotagError
from autotag.model import Embedder

log = logging.getLogger("autotag")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SUBCOMMANDS = ("init", "fetch-model", "search", "retag", "eval", "calibrate", "backfill",
               "quantize", "serve", "review")


class UsageError(AutotagError):
    """A startup problem the user fixes: one line, exit 2."""


@dataclass(frozen=True)
class Context:
    """What `main` hands every command besides its arguments."""

    embedder: Embedder | None = None  # a model to use instead of loading model.handle (tests)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="config file (default: ./config.yaml, then "
                             "$XDG_CONFIG_HOME/autotag/config.yaml; 'autotag init' writes one)")
    parser.add_argument("--model", metavar="HANDLE",
                        help="override model.handle: a hub URL or a local SavedModel directory")
    parser.add_argument("--debug", action="store_true",
                        help="verbose logs, with tracebacks")


# -- logging ----------------------------------------------------------------------------------

def interactive() -> bool:
    return sys.stderr.isatty()


def setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    if interactive():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False,
                                               rich_tracebacks=debug, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # plain lines; journald (JOURNAL_STREAM set, systemd.exec(5)) adds the time itself
        handler = logging.StreamHandler(sys.stderr)
        stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
        handler.setFormatter(logging.Formatter(stamp + "%(levelname)s %(message)s",
                                               datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("autotag").setLevel(level)
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ chatter
    from autotag.media import quiet_decoder

    quiet_decoder(debug)  # a broken clip is one line of ours, not the decoder's chatter


# -- startup ----------------------------------------------------------------------------------

def load_config(args: argparse.Namespace):
    """The config file (--config, else the usual places) with --model applied; UsageError."""
    from autotag.app import with_model
    from autotag.config import ConfigError, find_config
    from autotag.config import load_config as load

    try:
        path = find_config(args.config)
        config = load(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    log.debug("config: %s", path)
    return with_model(config, args.model)


def startup_error(exc: Exception, config) -> UsageError:
    """A model, store or daemon error at startup, naming the config file whose settings
    (model.handle, state.path, ...) it is about: the file read is the first of several places
    (docs/guides/configuration.md), and an edit to another one changes nothing."""
    where = f" (config: {config.source})" if getattr(config, "source", None) else ""
    return UsageError(f"{exc}{where}")


def open_app(config, ctx: Context, lazy: bool = False):
    """The app (app.open_app) with the context's embedder; its startup errors as UsageError.
    lazy: the model loads on its first call, if any (a run with nothing to do never loads it)."""
    from autotag.app import open_app as factory
    from autotag.errors import AutotagError

    try:
        return factory(config, ctx.embedder, lazy=lazy)
    except AutotagError as exc:
        raise startup_error(exc, config) from None


def open_store(config):
    from autotag.store import Store, StoreError

    try:
        return Store(config.state.store_path)
    except StoreError as exc:
        raise UsageError(str(exc)) from None


def walk(config, dirs: list[Path]) -> tuple[list[Path], list[Path]]:
    """(the clips under `dirs`, paths that could not be read), as a list: see Walk."""
    found = Walk(config, dirs)
    return list(found), found.unreadable


class Walk:
    """The clips under `dirs`, found as they are iterated (a million-clip archive is never a
    list): `--once`'s and `backfill`'s one walk, with the same extensions, ignore rules and
    exclusions (autotag's own output folders). Each unreadable path is named on stderr and kept
    in `unreadable`; `found` counts the clips so far; an empty walk says so once it ends."""

    def __init__(self, config, dirs: list[Path]) -> None:
        self.config = config
        self.dirs = dirs
        self.found = 0
        self.unreadable: list[Path] = []

    def __iter__(self) -> Iterator[Path]:
        return (found.path for found in self.entries())

    def entries(self) -> Iterator:
        """The walk's files.Found items: each clip with the stat the walk took of it."""
        from autotag.files import Edge, absolute, show, walk_clips

        def on_error(path: Path, reason: str) -> None:
            log.error("skipping %s: %s", show(path), reason)
            self.unreadable.append(path)

        roots = [absolute(d) for d in self.dirs]
        edge = Edge.of(roots, self.config.watch.follow_symlinks_out)
        for found in walk_clips(roots, self.config.watch.ignore,
                                self.config.outputs.own_folders, on_error, edge):
            self.found += 1
            yield found
        if not self.found:
            log.warning("no clips found under %s", ", ".join(show(d) for d in self.dirs))


# -- progress and summary ---------------------------------------------------------------------

def _nearness(closest: tuple) -> float:
    """How near a (label, score, threshold, ...) comes to its threshold, as a ratio."""
    _, score, threshold = closest[:3]
    return score / threshold if threshold > 0 else 1 + score - threshold


class Reporter:
    """Per-clip lines and, on a terminal, a rich progress bar (clips, windows/s, ETA); it keeps
    counts, not results. total None: not known up front (a streamed walk), so the bar counts
    clips done and found so far (`found`, a callable) instead of a fraction and an ETA."""

    def __init__(self, total: int | None, verb: str = "tagging", found=None) -> None:
        self.total = total
        self.verb = verb
        self.progress = None
        self.task = None
        self.window_count = 0  # windows of the clips tagged (the summary's figure)
        self.embedded_windows = 0  # windows through the model so far (the bar's rate)
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()
        self.found = found  # () -> clips found so far, when total is None
        self.untagged = 0  # clips tagged or re-tagged that got no tag
        self.closest: tuple[str, float, float, object] | None = None  # the nearest of them
        self._lock = threading.Lock()  # up_to_date() comes from the engine's decode threads

    def __enter__(self) -> Reporter:
        if interactive() and self.total is None:
            self._start_open_ended()
        elif interactive() and self.total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn(self.verb), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"),
                                     TextColumn("{task.fields[failed]}", style="red"),
                                     TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task(self.verb, total=self.total, rate="", failed="")
            self.progress.start()
        return self

    def _start_open_ended(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn(self.verb),
                                 TextColumn("{task.completed} of {task.fields[found]} found"),
                                 TextColumn("{task.fields[rate]}"),
                                 TextColumn("{task.fields[failed]}", style="red"),
                                 TimeElapsedColumn(), transient=True)
        self.task = self.progress.add_task(self.verb, total=None, rate="", failed="",
                                           found="?")
        self.progress.start()

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()

    def windows(self, n: int) -> None:
        """n more windows went through the model (per batch, before their clips finish)."""
        self.embedded_windows += n
        self._show_rate()

    def _show_rate(self) -> None:
        if self.progress:
            seconds = max(time.monotonic() - self.started, 1e-9)
            done = self.counts["tagged"] + self.counts["reused"]
            self.progress.update(self.task, rate=f"{done / seconds:.2f} clips/s, "
                                                 f"{self.embedded_windows / seconds:.1f} "
                                                 "windows/s")

    def up_to_date(self, paths: list) -> None:
        """These clips are up to date (tagging.fresh_pass): counted as skipped, no line each
        unless --debug."""
        from autotag.files import show

        if log.isEnabledFor(logging.DEBUG):
            for path in paths:
                log.debug("skipped %s: up to date", show(path))
        with self._lock:
            self.counts["skipped"] += len(paths)
            if self.progress:
                self.progress.update(self.task, advance=len(paths),
                                     **({"found": self.found()} if self.found else {}))

    def result(self, result) -> None:
        from autotag.passes import say_result

        with self._lock:
            self.counts[result.status] += 1
        self.window_count += result.windows
        say_result(result, log)
        if result.status in ("tagged", "reused") and not result.tags:
            self._note_untagged(result)
        if self.progress:
            failed = self.counts["failed"]
            self.progress.update(self.task, failed=f"{failed} failed" if failed else "",
                                 **({"found": self.found()} if self.found else {}))
            self._show_rate()
            self.progress.advance(self.task)

    def _note_untagged(self, result) -> None:
        closest = getattr(result, "closest", None)
        with self._lock:
            self.untagged += 1
            if closest and (self.closest is None or _nearness(closest) > _nearness(self.closest)):
                self.closest = (*closest, result.path)

    def untagged_line(self) -> str | None:
        """One line for the clips that got no tag: how close the best came, and the fix."""
        from autotag.files import show

        if not self.untagged:
            return None
        done = self.counts["tagged"] + self.counts["reused"]
        line = f"{self.untagged} of {done} clips got no tag: no score reached its threshold"
        if self.closest:
            label, score, threshold, path = self.closest
            ratio = f"{score / threshold:.1f}× its threshold, " if threshold > 0 else ""
            line += (f" (the closest: {label} at {ratio}score {score:.2f} of {threshold:g}, "
                     f"on {show(path)})")
        return line + ("; if they should have tags, run 'autotag calibrate' (from a labelled "
                       "folder or from your reviews) or lower tagging.min_score")

    def summary(self, skipped: str | None = None) -> None:
        untagged = self.untagged_line()
        if untagged:
            log.warning("%s", untagged)
        seconds = time.monotonic() - self.started
        counts, windows = self.counts, self.window_count
        rate = windows / seconds if seconds > 0 else 0.0
        rows = [("tagged", counts["tagged"]), ("tagged from stored embeddings", counts["reused"]),
                ("up to date" if skipped is None else skipped, counts["skipped"]),
                ("failed", counts["failed"])]
        if interactive():
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"autotag: {counts.total()} clips in {seconds:.1f} s, "
                                f"{windows} windows ({rate:.1f}/s)")
            table.add_column("clips")
            table.add_column("count", justify="right")
            for name, count in rows:
                table.add_row(name, str(count),
                              style="red" if name == "failed" and count else None)
            Console(stderr=True).print(table)
        else:
            log.info("done: %s; %d windows in %.1f s (%.1f/s)",
                     ", ".join(f"{count} {name}" for name, count in rows), windows, seconds, rate)
