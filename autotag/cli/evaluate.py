"""`autotag eval DIR`: how well the vocabulary tags a labelled folder; tables, JSON, HTML report.

argv → config → app (cli.common.open_app) → analysis.labelled → analysis.evaluation → printed
(rich tables or JSON) and, with --report, analysis.report's HTML page. With --precision int8:
the f32 and INT8 models (both OpenVINO) → the folder embedded by each, apart → two evaluations
→ printed side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
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
from autotag.cli.labelled import check_folder, embed_labelled, print_json, progress

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
    parser.add_argument("--precision", choices=["int8"],
                        help="int8: embed the folder with f32 and with the INT8 model 'autotag "
                             "quantize' made, and show the two side by side (mAP, top-1, "
                             "per-tag AP); both embed afresh, sharing no stored embeddings")
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
    from autotag.analysis.labelling import EvalError
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
    if args.precision == "int8":
        if args.report is not None:
            raise UsageError("--report shows one model; leave out --precision int8 (or set "
                             "model.precision: int8 to report on the INT8 model alone)")
        return run_side_by_side(args, ctx, config, templates)
    # lazy: a re-run whose clips and prompts are all stored or cached never loads the model
    app = open_app(config, ctx, lazy=True)
    try:
        labelled = embed_labelled(app, args.dir, show_progress=not args.json)
        table = embed_prompts(prompt_sets(config.vocabulary, templates), app.embedder,
                              default_cache_dir())
        evaluation = evaluate(labelled, config.vocabulary, table, config.tagging, templates,
                              app.vocabulary.vectors)
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


def run_side_by_side(args: argparse.Namespace, ctx: Context, config, templates) -> int:
    """`eval --precision int8`: the folder embedded by f32 and by INT8 (both on OpenVINO), each
    through an engine and state store of its own, evaluated alike, printed side by side."""
    from autotag.analysis.evaluation import agreement, embed_prompts, evaluate, prompt_sets
    from autotag.config import default_cache_dir
    from autotag.model import ModelError, load_configured

    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, runtime="openvino", precision="f32"))
    try:  # both models before anything is embedded: a missing INT8 model costs no wait
        f32 = ctx.embedder or load_configured(config.model)
        int8 = load_int8(config, f32)
    except ModelError as exc:
        raise startup_error(exc, config) from None
    app = open_app(config, Context(f32))
    try:
        table = embed_prompts(prompt_sets(config.vocabulary, templates), app.embedder,
                              default_cache_dir())
        evaluations = {}
        for name, embedder in (("f32", app.embedder), ("int8", int8)):
            labelled = embed_apart(config, embedder, args.dir, name, not args.json)
            evaluations[name] = evaluate(labelled, config.vocabulary, table, config.tagging,
                                         templates, app.vocabulary.vectors)
    except ModelError as exc:
        raise startup_error(exc, config) from None
    finally:
        app.close()
    agree = agreement(evaluations["f32"], evaluations["int8"])
    if args.json:
        print_json({name: ev.to_json() for name, ev in evaluations.items()}
                   | {"agreement": agree})
    else:
        print_side_by_side(evaluations["f32"], evaluations["int8"], agree)
    failed = any(ev.labelled.failed for ev in evaluations.values())
    return EXIT_FAILED if failed else EXIT_OK


def load_int8(config, f32):
    """The INT8 model beside the f32 one's cached IR (the same cache folder and batch size);
    ModelError from the loader when there is no accepted one."""
    from autotag.model import load_model

    f32_dir = getattr(f32, "cache_path", None)
    if f32_dir is None:
        raise UsageError("--precision int8 compares OpenVINO's INT8 and f32 models, and the "
                         "video model is not running on OpenVINO (see the warning above)")
    batch_size = getattr(getattr(f32, "video", None), "batch_size", config.model.batch_size)
    return load_model(config.model.handle, config.model.threads, runtime="openvino",
                      batch_size=batch_size, precision="int8", cache_dir=Path(f32_dir).parent)


def embed_apart(config, embedder, root: Path, name: str, show_progress: bool):
    """The labelled folder embedded by `embedder` through an engine whose state store lives in
    a temp folder: stored embeddings are keyed by the model's fingerprint, which f32 and INT8
    share, so neither may reuse the other's, nor leave its own in the user's store."""
    from autotag.analysis.labelling import EvalError, load_labelled
    from autotag.engine import Engine
    from autotag.store import Store

    with tempfile.TemporaryDirectory(prefix="autotag-eval-") as folder:
        store = Store(Path(folder) / "state.sqlite3")
        try:
            with progress(f"embedding ({name})", enabled=show_progress) as on_progress:
                return load_labelled(root, Engine(config, embedder, store), on_progress)
        except EvalError as exc:
            raise UsageError(str(exc)) from None
        finally:
            store.close()


def print_side_by_side(f32, int8, agree: dict, console=None) -> None:
    """Summary and per-tag figures of f32 and INT8 in adjacent columns."""
    from rich.console import Console
    from rich.table import Table

    from autotag.analysis.report import number, percent

    console = console or Console()
    lab = f32.labelled
    console.print(f"{lab.root}: {len(lab.clips)} clips, {len(f32.tags)} tags; INT8 gives "
                  f"{percent(agree['top1'])} of clips f32's top-1 tag and "
                  f"{percent(agree['given'])} f32's tags", highlight=False)
    summary = Table(title="f32 and INT8 side by side", title_justify="left")
    for name, justify in (("", "left"), ("f32", "right"), ("int8", "right")):
        summary.add_column(name, justify=justify)
    summary.add_row("top-1", percent(f32.top1), percent(int8.top1))
    summary.add_row(f"top-{f32.k}", percent(f32.topk), percent(int8.topk))
    summary.add_row("mAP", number(f32.map), number(int8.map), style="bold")
    console.print(summary)

    tags = Table(title="per tag (configured prompts)", title_justify="left")
    for name in ("tag", "clips", "AP f32", "AP int8", "precision f32", "precision int8",
                 "recall f32", "recall int8"):
        tags.add_column(name, justify="left" if name == "tag" else "right")
    others = {t.label: t for t in int8.tags}
    for t in f32.tags:
        o = others.get(t.label)
        if o is None:
            continue
        tags.add_row(t.label, str(t.clips), number(t.ap), number(o.ap), percent(t.precision),
                     percent(o.precision), percent(t.recall), percent(o.recall),
                     style="red" if o.ap < t.ap - 0.05 else None)
    console.print(tags)
    failed = len(lab.failed) + len(int8.labelled.failed)
    if failed:
        console.print(f"[red]{failed} clip(s) could not be used (see above)[/]")


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
