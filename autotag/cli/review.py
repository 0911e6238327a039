"""`autotag review CLIP... --confirm TAG --reject TAG --clear TAG`: a person's word on tags."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from autotag.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Context,
    UsageError,
    add_common,
    load_config,
    open_app,
)
from autotag.files import absolute, show

log = logging.getLogger("autotag")


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag review",
        description="Confirm or reject tags on clips autotag tagged. A review is kept in the "
                    "state store by the clip's content (it follows renames and copies) and wins "
                    "from then on: a rejected tag is never written again for that clip, a "
                    "confirmed one always is. Every output of the clip is rewritten at once.")
    parser.add_argument("clips", nargs="+", type=Path, metavar="CLIP")
    parser.add_argument("--confirm", action="append", default=[], metavar="TAG",
                        help="the clip shows this (repeat for several)")
    parser.add_argument("--reject", action="append", default=[], metavar="TAG",
                        help="the clip does not show this (repeat for several)")
    parser.add_argument("--clear", action="append", default=[], metavar="TAG",
                        help="forget an earlier review: the model decides again")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.mqtt import end_run, start_run
    from autotag.reviews import ReviewError, Verdicts, review

    config = load_config(args)
    verdicts = Verdicts(tuple(args.confirm), tuple(args.reject), tuple(args.clear))
    app = open_app(config, ctx, lazy=True)  # only the text model, and only for a new prompt
    publisher = start_run(config)  # MQTT: the reviewed clips' events go out now
    failed = 0
    try:
        try:
            verdicts.as_map(app.vocabulary.labels)
        except ReviewError as exc:
            raise UsageError(str(exc)) from None
        for clip in args.clips:
            record = app.store.file(absolute(clip))
            if record is None or record.status != "tagged":
                log.error("skipping %s: not tagged yet; run 'autotag --once' on it first",
                          show(clip))
                failed += 1
                continue
            for result in review(app.tagger, app.store, record, verdicts):
                if result.status == "failed":
                    failed += 1
                    log.error("skipping %s: %s", show(result.path), result.reason)
                elif result.status == "skipped":
                    log.warning("%s: %s", show(result.path), result.reason)
                else:
                    tags = ", ".join(t.label for t in result.tags) or "no tag"
                    log.info("reviewed %s: %s", show(result.path), tags)
    finally:
        app.close()
        end_run(publisher)
    return EXIT_FAILED if failed else EXIT_OK
