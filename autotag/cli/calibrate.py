"""`autotag calibrate DIR`: per-tag thresholds and the temperature from a labelled folder.

argv → config → app (cli.common.open_app) → analysis.labelled → clip scores against the
vocabulary → analysis.calibration → printed, and with --write analysis.config_editor's edit of
the config (or, when it cannot edit safely, the lines to paste).
"""

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
    startup_error,
)
from autotag.cli.labelled import check_folder, embed_labelled, print_json

log = logging.getLogger(__name__)


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
    from autotag.analysis.calibration import calibrate, merged_thresholds
    from autotag.analysis.config_editor import snippet
    from autotag.analysis.metrics import clip_scores
    from autotag.model import ModelError

    if args.write and args.model:
        raise UsageError("--write calibrates the configured model; set model.handle in the "
                         "config instead of passing --model")
    config = load_config(args)
    if not 0 < args.precision <= 1:
        raise UsageError(f"--precision must be in (0, 1], got {args.precision}; e.g. 0.9")
    if args.write and config.source is None:
        raise UsageError("--write needs a config file; pass --config PATH")
    check_folder(args.dir, config.labels)
    # lazy: a re-run whose clips are all stored and whose prompts are cached never loads it
    app = open_app(config, ctx, lazy=True)
    try:
        labelled = embed_labelled(app, args.dir, show_progress=not args.json)
        scores = clip_scores(labelled.embeddings, app.vocabulary.vectors)
    except ModelError as exc:  # the lazy model failed to load at its first call
        raise startup_error(exc, config) from None
    finally:
        app.close()
    calibration = calibrate(labelled, scores, config, args.precision)
    thresholds = merged_thresholds(config, calibration)
    if args.json:
        print_json(calibration.to_json())
    else:
        print_calibration(calibration)
    if not args.write:
        if not args.json:
            print(f"\nadd to the tagging: section of {config.source or 'your config'} "
                  "(or run again with --write):\n")
            print(snippet(thresholds, calibration.temperature), end="")
        written = True
    else:
        written = write(config.source, calibration, thresholds)
    return EXIT_FAILED if calibration.failed or not written else EXIT_OK


def write(path: Path, calibration, thresholds: dict[str, float]) -> bool:
    """Edit the config file's tagging: section, or log the lines to paste; True if written.
    thresholds: the config's, with the calibrated ones set (merged_thresholds)."""
    from autotag.analysis.config_editor import CannotEdit, edited_config, snippet, write_config

    temperature = calibration.temperature
    try:
        write_config(path, edited_config(path, thresholds, temperature))
    except (CannotEdit, OSError) as exc:
        log.error("not writing %s: %s; add these lines to its tagging: section by hand:\n%s",
                  path, exc, snippet(thresholds, temperature))
        return False
    log.info("wrote %d threshold(s) and temperature %g into %s", len(calibration.thresholds),
             temperature, path)
    return True


def print_calibration(calibration, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"thresholds for {100 * calibration.target:g}% precision "
                        f"({calibration.clips} clips)", title_justify="left")
    for name in ("tag", "clips", "threshold", "now", "precision", "recall"):
        table.add_column(name, justify="left" if name == "tag" else "right")
    for t in calibration.tags:
        if t.reached:
            table.add_row(t.label, str(t.clips), f"{t.threshold:g}", f"{t.current:g}",
                          f"{100 * t.precision:.1f}%", f"{100 * t.recall:.1f}%")
        else:
            table.add_row(t.label, str(t.clips), "not reached", f"{t.current:g}",
                          f"best {100 * t.precision:.1f}%", f"{100 * t.recall:.1f}%",
                          style="yellow")
    console.print(table)
    missed = [t.label for t in calibration.tags if not t.reached]
    if missed:
        console.print(f"[yellow]{', '.join(missed)}: no threshold reaches the target on these "
                      "clips; they keep their threshold (lower --precision, or improve their "
                      "prompts)[/]", highlight=False)
    console.print(f"temperature {calibration.temperature:g} (mean NLL of the true tags "
                  f"{calibration.nll_before:.3f} → {calibration.nll_after:.3f})",
                  highlight=False)
