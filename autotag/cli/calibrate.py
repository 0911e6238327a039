"""`autotag calibrate DIR`: per-tag thresholds and the temperature from a labelled folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from autotag.cli.common import EXIT_FAILED, EXIT_OK, Context, UsageError, add_common, load_config


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag calibrate",
        description="Per-tag thresholds from evidence: from a folder with one subfolder per tag, "
                    "the score at which each tag reaches the target precision, and the "
                    "confidences' temperature. Printed, or written into the config's tagging: "
                    "section with --write (its comments kept).")
    parser.add_argument("dir", type=Path, metavar="DIR", help="a folder with one subfolder per tag")
    parser.add_argument("--write", action="store_true",
                        help="write tagging.thresholds and tagging.temperature into the config")
    parser.add_argument("--precision", type=float, default=0.9, metavar="P",
                        help="the precision each tag's threshold must reach (default: 0.9)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.calibrate import run_calibrate
    from autotag.evaluate import EvalError

    if args.write and args.model:
        raise UsageError("--write calibrates the configured model; set model.handle in the "
                         "config instead of passing --model")
    config = load_config(args)
    try:
        calibration, written = run_calibrate(config, args.dir, target=args.precision,
                                             write=args.write, as_json=args.json,
                                             embedder=ctx.embedder)
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_FAILED if calibration.failed or (args.write and not written) else EXIT_OK
