"""`autotag eval DIR`: how well the vocabulary tags a labelled folder; tables, JSON, HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from autotag.cli.common import EXIT_FAILED, EXIT_OK, Context, UsageError, add_common, load_config


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag eval",
        description="How well the vocabulary tags your own clips: DIR holds one subfolder per "
                    "tag (DIR/skiing/*.mp4, like UCF101). Prints top-1 and top-5 accuracy, "
                    "per-tag precision, recall and average precision, mAP, the costliest "
                    "confusions, and the AP of each tag's name, configured prompts and "
                    "template prompts side by side. Nothing is written beside the clips.")
    parser.add_argument("dir", type=Path, metavar="DIR", help="a folder with one subfolder per tag")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="also write a self-contained HTML report to FILE")
    parser.add_argument("--template", action="append", metavar="TEXT",
                        help="a prompt template for the 'templates' prompt set, {} standing for "
                             "the tag's name (repeat for several; default: {}, 'a person {}', "
                             "'someone {}', 'people {}')")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.evaluate import EvalError, run_eval

    config = load_config(args)
    try:
        evaluation = run_eval(config, args.dir, as_json=args.json, report=args.report,
                              templates=args.template, embedder=ctx.embedder)
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_FAILED if evaluation.labelled.failed else EXIT_OK
