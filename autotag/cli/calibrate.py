"""`autotag calibrate DIR | --from-reviews`: per-tag thresholds from a labelled folder (and the
temperature), or from the reviews in the state store.

DIR: argv → config → app (cli.common.open_app) → analysis.labelled → clip scores against the
vocabulary → analysis.calibration.calibrate → printed, and with --write analysis.config_editor's
edit of the config (or, when it cannot edit safely, the lines to paste).
--from-reviews: argv → config → app → analysis.calibration.from_reviews (the store's clip index
and reviews: nothing decoded, no video model) → the table of what changes → the config editor's
edit of tagging.thresholds (not with --dry-run).
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
        description="Per-tag thresholds from evidence: the score at which each tag reaches the "
                    "target precision, from a folder with one subfolder per tag (and the "
                    "confidences' temperature), or with --from-reviews from the clips you "
                    "confirmed or rejected each tag on. A tag needs 5 clips of each kind "
                    "(showing it, not showing it; calibration.MIN_REVIEWS), or keeps its "
                    "threshold. Written into the config's tagging: section, its comments "
                    "kept: with --write (DIR), unless --dry-run (--from-reviews).")
    parser.add_argument("dir", type=Path, nargs="?", metavar="DIR",
                        help="a folder with one subfolder per tag")
    parser.add_argument("--from-reviews", action="store_true",
                        help="thresholds from the reviews in the state store (autotag review); "
                             "shows how many clips gain or lose each tag, then writes them")
    parser.add_argument("--write", action="store_true",
                        help="write tagging.thresholds and tagging.temperature into the config "
                             "(DIR; --from-reviews writes unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="only show the table; write nothing")
    parser.add_argument("--precision", type=float, default=0.9, metavar="P",
                        help="the precision each tag's threshold must reach (default: 0.9)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    if (args.dir is None) == (not args.from_reviews):
        raise UsageError("name a labelled folder DIR or pass --from-reviews" if args.dir is None
                         else "--from-reviews takes no DIR; pass one or the other")
    if args.dry_run and args.write:
        raise UsageError("--dry-run writes nothing; drop --write or --dry-run")
    writes = not args.dry_run and (args.write or args.from_reviews)
    if writes and args.model:
        raise UsageError("--write calibrates the configured model; set model.handle in the "
                         "config instead of passing --model" if args.write else
                         "--from-reviews writes thresholds for the configured model; set "
                         "model.handle in the config instead of passing --model (or --dry-run)")
    config = load_config(args)
    if not 0 < args.precision <= 1:
        raise UsageError(f"--precision must be in (0, 1], got {args.precision}; e.g. 0.9")
    if writes and config.source is None:
        raise UsageError("--write needs a config file; pass --config PATH" if args.write else
                         "--from-reviews writes into the config file; pass --config PATH "
                         "(or --dry-run)")
    if args.from_reviews:
        return from_reviews(args, ctx, config, writes)
    return from_folder(args, ctx, config)


def from_folder(args: argparse.Namespace, ctx: Context, config) -> int:
    from autotag.analysis.calibration import calibrate, merged_thresholds
    from autotag.analysis.config_editor import snippet
    from autotag.analysis.metrics import clip_scores
    from autotag.model import ModelError

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
        if not args.json and not args.dry_run:
            print(f"\nadd to the tagging: section of {config.source or 'your config'} "
                  "(or run again with --write):\n")
            print(snippet(thresholds, calibration.temperature), end="")
        written = True
    else:
        written = write(config.source, thresholds, calibration.temperature,
                        len(calibration.thresholds))
    return EXIT_FAILED if calibration.failed or not written else EXIT_OK


def from_reviews(args: argparse.Namespace, ctx: Context, config, writes: bool) -> int:
    from autotag.analysis.calibration import from_reviews as propose

    app = open_app(config, ctx, lazy=True)  # the text model loads only for an uncached prompt
    try:
        proposal = propose(app.store, app.tagger.model, app.vocabulary, config.tagging,
                           args.precision)
    finally:
        app.close()
    if args.json:
        print_json(proposal.to_json())
    else:
        print_proposal(proposal)
    if not writes:
        if not args.json:
            print("dry run: nothing written")
        return EXIT_OK
    if not proposal.changed:
        if not args.json:
            print("no threshold changes; nothing written")
        return EXIT_OK
    return EXIT_OK if write(config.source, proposal.merged, None,
                            len(proposal.thresholds)) else EXIT_FAILED


def write(path: Path, thresholds: dict[str, float], temperature: float | None,
          count: int) -> bool:
    """Edit the config file's tagging: section (temperature None: the thresholds only), or log
    the lines to paste; True if written. thresholds: the config's, with the `count` calibrated
    ones set (merged_thresholds, Proposal.merged)."""
    from autotag.analysis.config_editor import CannotEdit, snippet, write_tagging

    try:
        write_tagging(path, thresholds, temperature)
    except (CannotEdit, OSError) as exc:
        log.error("not writing %s: %s; add these lines to its tagging: section by hand:\n%s",
                  path, exc, snippet(thresholds, temperature))
        return False
    log.info("wrote %d threshold(s)%s into %s; 'autotag retag' rewrites the tags of the clips "
             "tagged already", count,
             "" if temperature is None else f" and temperature {temperature:g}", path)
    return True


def print_calibration(calibration, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from autotag.analysis.calibration import shortfall_message

    console = console or Console()
    table = Table(title=f"thresholds for {100 * calibration.target:g}% precision "
                        f"({calibration.clips} clips)", title_justify="left")
    for name in ("tag", "clips", "threshold", "now", "precision", "recall"):
        table.add_column(name, justify="left" if name == "tag" else "right")
    for t in calibration.tags:
        if t.reached:
            table.add_row(t.label, str(t.clips), f"{t.threshold:g}", f"{t.current:g}",
                          f"{100 * t.precision:.1f}%", f"{100 * t.recall:.1f}%")
        elif not t.enough:
            table.add_row(t.label, str(t.clips), "too few clips", f"{t.current:g}", "", "",
                          style="yellow")
        else:
            table.add_row(t.label, str(t.clips), "not reached", f"{t.current:g}",
                          f"best {100 * t.precision:.1f}%", f"{100 * t.recall:.1f}%",
                          style="yellow")
    console.print(table)
    for t in calibration.tags:
        if not t.enough:
            console.print(shortfall_message(t.label, t.needed, t.current, reviews=False),
                          style="yellow", highlight=False, soft_wrap=True)
    missed = [t.label for t in calibration.tags if t.enough and not t.reached]
    if missed:
        console.print(f"[yellow]{', '.join(missed)}: no threshold reaches the target on these "
                      "clips; they keep their threshold (lower --precision, or improve their "
                      "prompts)[/]", highlight=False)
    console.print(f"temperature {calibration.temperature:g} (mean NLL of the true tags "
                  f"{calibration.nll_before:.3f} → {calibration.nll_after:.3f})",
                  highlight=False)


def print_proposal(proposal, console=None) -> None:
    """The table of a calibration from reviews: each reviewed tag's old and new threshold, and
    how many library clips gain or lose each tag; then why a tag is left alone, one line each."""
    from rich.console import Console
    from rich.table import Table

    from autotag.analysis.calibration import MIN_REVIEWS

    console = console or Console()
    shown = [t for t in proposal.tags if t.confirmed or t.rejected or t.gains or t.losses]
    unreviewed = [t.label for t in proposal.tags if not (t.confirmed or t.rejected)]
    if not shown:
        console.print("no reviews in the state store yet: confirm or reject tags with "
                      "'autotag review CLIP --confirm TAG --reject TAG' (or on a clip's page "
                      "in the web app)", highlight=False, soft_wrap=True)
        return
    # a line, not the table's title: a title wraps at the table's width
    console.print(f"thresholds for {100 * proposal.target:g}% precision from "
                  f"{proposal.reviewed} reviewed clips; the clips of {proposal.clips} that "
                  "gain or lose each tag:", highlight=False, soft_wrap=True)
    table = Table()
    # precision and recall on the reviewed clips are in --json: 80 columns hold no more
    for name in ("tag", "confirmed", "rejected", "now", "new", "gains", "losses"):
        table.add_column(name, justify="left" if name == "tag" else "right")
    for t in shown:
        new = (f"{t.new:g}" if t.reached else "too few" if not t.enough else "not reached")
        table.add_row(t.label, str(t.confirmed), str(t.rejected), f"{t.old:g}", new,
                      f"+{t.gains}" if t.gains else "0", f"-{t.losses}" if t.losses else "0",
                      style=None if t.reached else "yellow")
    console.print(table)
    for t in shown:
        if (t.confirmed or t.rejected) and (message := t.message()):
            console.print(message, style="yellow", highlight=False, soft_wrap=True)
    if unreviewed:
        left = "thresholds left as they are" if len(unreviewed) > 1 else "threshold left as it is"
        console.print(f"{', '.join(unreviewed)}: no reviews yet (a tag needs {MIN_REVIEWS} "
                      f"confirmed and {MIN_REVIEWS} rejected clips); {left}", style="yellow",
                      highlight=False, soft_wrap=True)
