"""`autotag eval DIR`: how well the vocabulary tags a labelled folder; tables, JSON, HTML report.

argv → config → app (cli.common.open_app) → analysis.labelled → analysis.evaluation → printed
(rich tables or JSON) and, with --report, analysis.report's HTML page.
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
    from autotag.analysis.evaluation import (
        DEFAULT_TEMPLATES,
        check_templates,
        embed_prompts,
        evaluate,
        prompt_sets,
    )
    from autotag.analysis.labelled import EvalError
    from autotag.config import default_cache_dir
    from autotag.model import ModelError

    config = load_config(args)
    templates = tuple(args.template or DEFAULT_TEMPLATES)
    if args.report is not None and not args.report.resolve().parent.is_dir():
        raise UsageError(f"cannot write the report to {args.report}: its folder does not exist; "
                         "create it or pass another --report path")
    try:
        check_templates(templates)
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    check_folder(args.dir, config.labels)
    # lazy: a re-run whose clips and prompts are all stored or cached never loads the model
    app = open_app(config, ctx, lazy=True)
    try:
        labelled = embed_labelled(app, args.dir, show_progress=not args.json)
        table = embed_prompts(prompt_sets(config.vocabulary, templates), app.embedder,
                              default_cache_dir())
        evaluation = evaluate(labelled, config.vocabulary, table, config.tagging, templates)
        if args.json:
            print_json(evaluation.to_json())
        else:
            print_evaluation(evaluation)
        if args.report is not None:
            write_report(evaluation, args.report, app.store.thumbnails)
    except ModelError as exc:  # the lazy model failed to load at its first call
        raise startup_error(exc, config) from None
    finally:
        app.close()
    return EXIT_FAILED if labelled.failed else EXIT_OK


def write_report(evaluation, path: Path, thumbnails) -> None:
    from autotag.analysis.report import write_html

    try:
        write_html(evaluation, path, thumbnails)
    except OSError as exc:
        raise UsageError(f"cannot write the report: {exc}; pass another --report path") from None
    log.info("report written to %s", path)


def print_evaluation(evaluation, console=None) -> None:
    """Summary, per-tag figures, prompt sets side by side, costly confusions."""
    from rich.console import Console
    from rich.table import Table

    from autotag.analysis.report import number, percent

    console = console or Console()
    ev, lab = evaluation, evaluation.labelled
    console.print(f"{lab.root}: {len(lab.clips)} clips, {len(ev.tags)} tags", highlight=False)
    console.print(f"top-1 [bold]{percent(ev.top1)}[/bold], top-{ev.k} {percent(ev.topk)}, "
                  f"mAP [bold]{number(ev.map)}[/bold]", highlight=False)

    tags = Table(title="per tag (configured prompts)", title_justify="left")
    for name, justify in (("tag", "left"), ("clips", "right"), ("AP", "right"),
                          ("precision", "right"), ("recall", "right"), ("given", "right"),
                          ("threshold", "right")):
        tags.add_column(name, justify=justify)
    for t in sorted(ev.tags, key=lambda t: t.ap):
        tags.add_row(t.label, str(t.clips), number(t.ap), percent(t.precision),
                     percent(t.recall), str(t.given), f"{t.threshold:g}",
                     style="red" if t.ap < 0.5 else None)
    console.print(tags)

    sets = Table(title="which phrasing works: AP per prompt set", title_justify="left")
    sets.add_column("tag")
    for s in ev.sets:
        sets.add_column(s.name, justify="right")
    for t in ev.tags:
        values = [s.ap[t.label] for s in ev.sets]
        best = max(values)
        sets.add_row(t.label, *[f"[bold green]{number(v)}[/]"
                                if v == best and len(set(values)) > 1 else number(v)
                                for v in values])
    sets.add_section()
    sets.add_row("mAP", *[number(s.map) for s in ev.sets], style="bold")
    sets.add_row("top-1", *[percent(s.top1) for s in ev.sets], style="bold")
    console.print(sets)
    for t in ev.tags:
        for prompt, ap in t.better_prompts.items():
            console.print(f"[yellow]{t.label}: {prompt!r} alone has AP {number(ap)}, better "
                          f"than its prompts together ({number(t.ap)})[/]", highlight=False)
    for s in ev.sets:
        if s.unknown:
            console.print(f"[yellow]{s.name}: the model knows no word of "
                          f"{', '.join(repr(p) for p in s.unknown)}[/]", highlight=False)

    if ev.confusions:
        pairs = Table(title="costliest confusions (top-1)", title_justify="left")
        for name, justify in (("tag", "left"), ("taken for", "left"), ("clips", "right"),
                              ("share of the tag", "right")):
            pairs.add_column(name, justify=justify)
        for c in ev.confusions:
            pairs.add_row(c.true, c.predicted, str(c.clips), percent(c.share))
        console.print(pairs)
    if lab.unmatched:
        console.print(f"[yellow]left out, no such tag: {', '.join(lab.unmatched)}[/]",
                      highlight=False)
    if lab.failed:
        console.print(f"[red]{len(lab.failed)} clip(s) could not be used (see above)[/]")
