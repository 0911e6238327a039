"""`autotag backfill DIR...`: the `--once` walk → the one pass (passes.run_pass) on Ray → the `--once` summary."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import logging
from pathlib import Path

from autotag.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Context,
    Reporter,
    UsageError,
    Walk,
    add_common,
    load_config,
    open_app,
    startup_error,
)
from autotag.files import show

log = logging.getLogger("autotag")


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag backfill",
        description="Tag folders as 'autotag --once' does, decoding and embedding the clips on "
                    "a Ray cluster (a local Ray without one); tags, outputs and the state store "
                    "are written here. Needs the cluster extra: pip install "
                    "'autotag[cluster]'.")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR",
                        help="folders (or files) to tag; every node sees them at these paths")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="the Ray cluster (host:port, or ray://host:10001); default: "
                             "$RAY_ADDRESS, else a Ray started on this machine for the run")
    parser.add_argument("--force", action="store_true",
                        help="re-tag clips whose outputs are up to date")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    if importlib.util.find_spec("ray") is None:  # before any work: say what to install
        from autotag.cluster import INSTALL_HINT

        raise UsageError(f"autotag backfill needs Ray: {INSTALL_HINT}")
    config = load_config(args)
    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        raise UsageError(f"{show(missing[0])} does not exist; name an existing folder or file")
    return backfill(config, args, ctx)


def backfill(config, args: argparse.Namespace, ctx: Context) -> int:
    from autotag import cluster
    from autotag.model import ModelError
    from autotag.passes import run_pass

    clips = Walk(config, args.dirs)  # the walk of `autotag --once`, streamed
    found = iter(clips)
    first = next(found, None)
    if first is None:
        return EXIT_FAILED if clips.unreadable else EXIT_OK
    app = open_app(config, ctx, lazy=True)
    app.store.record_roots([d.absolute() for d in args.dirs])  # what the web app may serve
    started: list[bool] = []  # Ray is started (or joined) only if a clip needs decoding
    timing = cluster.Timing()
    try:
        on_ray = cluster.OnRay(app, debug=args.debug, timing=timing,
                               before_cluster=lambda: started.append(
                                   cluster.connect(args.address, debug=args.debug)))
        with Reporter(None, verb="backfilling", found=lambda: clips.found) as reporter:
            # the library's one pass, as --once runs it, with the clips decoded on Ray
            run_pass(on_ray, itertools.chain([first], found), reporter, force=args.force)
    except (cluster.ClusterError, ModelError) as exc:
        raise startup_error(exc, config) from None
    finally:
        app.close()
        if any(started):
            cluster.shutdown()
    if timing.clips:
        log.debug("on Ray: %d clips, %.1f s decoding and %.1f s in the model (summed over "
                  "workers)", timing.clips, timing.decode, timing.embed)
    reporter.summary()
    return EXIT_FAILED if clips.unreadable or reporter.counts["failed"] else EXIT_OK
