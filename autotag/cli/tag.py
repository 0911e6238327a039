"""`autotag --once DIR...` (one pass, then exit) and `autotag DIR...` (the daemon)."""

from __future__ import annotations

import argparse
import itertools
import logging
from collections import Counter
from pathlib import Path

from autotag import __version__
from autotag.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    SUBCOMMANDS,
    Context,
    Reporter,
    UsageError,
    Walk,
    add_common,
    load_config,
    open_app,
    startup_error,
)
from autotag.files import Edge, absolute, show

log = logging.getLogger("autotag")


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag",
        usage="%(prog)s [--once] [--force] [--config PATH] [--model HANDLE] [--debug] DIR...\n"
              "       %(prog)s {" + ",".join(SUBCOMMANDS) + "} ...",
        description="Tag video clips and GIFs by the activities in them (MIL-NCE). Without "
                    "--once, watch the folders and tag each new clip once it is complete.",
        epilog="On a CPU the video model runs on OpenVINO (model.runtime: auto); the first "
               "start converts it in a few seconds, in a child process, cached for later "
               "starts ('autotag fetch-model' does it ahead), and TensorFlow is started only "
               "for that and for new text. With an NVIDIA GPU it runs on TensorFlow. Other "
               "commands: " + ", ".join(SUBCOMMANDS)
               + " (autotag COMMAND --help).")
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="folders (or files) to tag; watch mode adds watch.paths")
    parser.add_argument("--once", action="store_true",
                        help="tag what is there now and exit, instead of watching")
    parser.add_argument("--force", action="store_true",
                        help="re-tag clips whose outputs are up to date")
    parser.add_argument("--version", action="version", version=f"autotag {__version__}")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    config = load_config(args)
    if not args.once:
        return watch(args, config, ctx)
    if not args.dirs:
        raise UsageError("name at least one folder to tag, e.g. 'autotag --once ./clips'")
    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        raise UsageError(f"{show(missing[0])} does not exist; name an existing folder or file")
    return once(config, args.dirs, args.force, ctx)


def once(config, dirs: list[Path], force: bool, ctx: Context) -> int:
    from autotag.mqtt import publishing

    # MQTT (on in config): what earlier runs left in the outbox goes out from the start, this
    # run's events as they come; the end waits a bounded time for the broker's PUBACKs
    with publishing(config) as publisher:
        return _once(config, dirs, force, ctx, publisher)


def _once(config, dirs: list[Path], force: bool, ctx: Context, publisher) -> int:
    from autotag.model import ModelError
    from autotag.mqtt import model_status
    from autotag.passes import not_in_store_message, run_pass

    clips = Walk(config, dirs)  # streamed: the first clip is tagged while the walk goes on
    found = clips.entries()
    first = next(found, None)
    if first is None:
        return EXIT_FAILED if clips.unreadable else EXIT_OK
    # lazy: the video model loads at the first clip that needs it, so a re-run over a tagged
    # library (every clip up to date) is instant
    app = open_app(config, ctx, lazy=True)
    if publisher is not None:  # the runtime the model loads on, for Home Assistant's sensor
        publisher.status = lambda: model_status(config, app.embedder)
    lost: Counter[str] = Counter()  # clips with a sidecar the store does not know
    try:
        app.store.record_roots([absolute(d) for d in dirs])  # what the web app may serve
        app.engine.edge = Edge.of([absolute(d) for d in dirs],  # and what the engine reads
                                  config.watch.follow_symlinks_out)
        # the library's one pass: the up-to-date pass (the walk's stat and a batched store
        # lookup per clip, no file opened), then the engine and tagging for the others
        with Reporter(None, found=lambda: clips.found) as reporter:
            run_pass(app, itertools.chain([first], found), _Waking(reporter, publisher),
                     force=force, lost=lambda _: lost.update(["n"]))
    except ModelError as exc:
        raise startup_error(exc, config) from None
    finally:
        app.close()
    if lost:
        log.warning(not_in_store_message(lost["n"], config))
    reporter.summary()
    return EXIT_FAILED if clips.unreadable or reporter.counts["failed"] else EXIT_OK


class _Waking:
    """The terminal reporter as the pass's listener, waking the MQTT publisher (if any) after
    each clip's result, whose event the store's outbox now holds."""

    def __init__(self, reporter: Reporter, publisher) -> None:
        self.reporter, self.publisher = reporter, publisher

    def up_to_date(self, paths: list[Path]) -> None:
        self.reporter.up_to_date(paths)

    def windows(self, count: int) -> None:
        self.reporter.windows(count)

    def result(self, result) -> None:
        self.reporter.result(result)
        if self.publisher is not None:
            self.publisher.wake()


def watch(args: argparse.Namespace, config, ctx: Context) -> int:
    from autotag.app import open_app as factory
    from autotag.daemon.service import Daemon
    from autotag.errors import AutotagError

    if not args.dirs and not config.watch.paths:
        raise UsageError("name folders to watch, e.g. 'autotag ./clips', or set watch.paths")
    # A folder named on the command line must be there (a typo, or a mistyped subcommand, must
    # not start a daemon); watch.paths may be an unmounted share, watched for until it returns.
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        raise UsageError(f"{show(missing[0])} is not a folder; name folders to watch (commands: "
                         + ", ".join(SUBCOMMANDS) + ")")
    daemon = Daemon(config, args.dirs,
                    open_app=lambda c, embedder: factory(c, embedder or ctx.embedder),
                    reload_config=lambda: load_config(args))
    try:
        return daemon.run()
    except AutotagError as exc:
        raise startup_error(exc, config) from None
