"""`autotag retag [DIR...]`: stored embeddings → current vocabulary → every output, no decoding."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from autotag.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Context,
    Reporter,
    UsageError,
    add_common,
    load_config,
    open_app,
)
from autotag.files import absolute, show

log = logging.getLogger("autotag")


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag retag",
        description="Re-score the clips autotag has tagged (all, or those under DIR) against "
                    "the current vocabulary and tagging settings, from their stored "
                    "embeddings, and rewrite every output. Nothing is decoded; the video model "
                    "is not used.")
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="only clips in these folders (default: every stored clip)")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.mqtt import end_run, start_run
    from autotag.retagging import retag, stored_clips

    config = load_config(args)
    missing = [d for d in args.dirs if not d.exists()]
    if missing:  # as --once: a typo must not look like "nothing stored there"
        raise UsageError(f"{show(missing[0])} does not exist; name an existing folder")
    app = open_app(config, ctx, lazy=True)  # the text model loads only for uncached prompts
    publisher = start_run(config)  # MQTT: the events of clips whose tags change
    try:
        records = stored_clips(app.store, app.tagger.model, [absolute(d) for d in args.dirs])
        if not records:
            log.warning("no stored clip to re-tag%s; tag a folder with 'autotag --once DIR'",
                        " under " + ", ".join(map(show, args.dirs)) if args.dirs else "")
        with Reporter(len(records), verb="re-tagging") as reporter:
            for result in retag(app.tagger, app.store, records):
                reporter.result(result)
    finally:
        app.close()
        end_run(publisher)
    reporter.summary(skipped="skipped (gone or changed)")
    return EXIT_FAILED if reporter.counts["failed"] else EXIT_OK
