"""argv → command → exit code: argument parsing, rich progress and tables, nothing else.

Exit codes: 0 every clip tagged (or up to date), 1 some clips failed (each named on stderr
with its reason), 2 usage, configuration or startup errors (one line naming the fix).
TensorFlow is imported only by the commands that need the model, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from autotag import __version__
from autotag.files import absolute, show

log = logging.getLogger("autotag")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A startup problem the user fixes: one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `autotag [--once] DIR...` tags; `autotag COMMAND ...` runs a subcommand. argparse's
    # subparsers cannot mix with a positional DIR list, so the first word decides.
    command = argv[0] if argv and argv[0] in COMMANDS else "tag"
    build, handler = COMMANDS[command]
    parser = build()
    args = parser.parse_args(argv[1:] if command != "tag" else argv)
    _setup_logging(args.debug)
    try:
        return handler(args)
    except UsageError as exc:
        print(f"autotag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autotag: interrupted", file=sys.stderr)
        return 130


# -- parsing ----------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="config file (default: ./config.yaml, then "
                             "$XDG_CONFIG_HOME/autotag/config.yaml)")
    parser.add_argument("--model", metavar="HANDLE",
                        help="override model.handle: a hub URL or a local SavedModel directory")
    parser.add_argument("--debug", action="store_true",
                        help="verbose logs, with tracebacks")


def _tag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag",
        description="Tag video clips and GIFs by the activities in them (MIL-NCE). Without "
                    "--once, watch the folders and tag each new clip once it is complete.",
        epilog="other commands: " + ", ".join(c for c in COMMANDS if c != "tag")
               + " (autotag COMMAND --help)")
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="folders (or files) to tag; watch mode adds watch.paths")
    parser.add_argument("--once", action="store_true",
                        help="tag what is there now and exit, instead of watching")
    parser.add_argument("--force", action="store_true",
                        help="re-tag clips whose outputs are up to date")
    parser.add_argument("--version", action="version", version=f"autotag {__version__}")
    _common(parser)
    return parser


def _fetch_model_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag fetch-model",
        description="Download the model into the persistent cache once, so the service "
                    "(or an offline machine sharing the cache) runs without network access.")
    _common(parser)
    return parser


# -- logging ----------------------------------------------------------------------------------

def _interactive() -> bool:
    return sys.stderr.isatty()


def _setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO
    if _interactive():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False,
                                               rich_tracebacks=debug, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # plain lines; journald (JOURNAL_STREAM set, systemd.exec(5)) adds the time itself
        handler = logging.StreamHandler(sys.stderr)
        stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
        handler.setFormatter(logging.Formatter(stamp + "%(levelname)s %(message)s",
                                               datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("autotag").setLevel(level)
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ chatter


# -- startup ----------------------------------------------------------------------------------

def _load_config(args: argparse.Namespace):
    from autotag.app import with_model
    from autotag.config import ConfigError, find_config, load_config

    try:
        config = load_config(find_config(args.config))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return with_model(config, args.model)


def _open(config, lazy: bool = False):
    """The app; lazy: the model loads only if a prompt is missing from the text cache (retag)."""
    from autotag.app import open_app
    from autotag.model import LazyEmbedder, ModelError
    from autotag.store import StoreError

    embedder = LazyEmbedder(config.model.handle, config.model.threads) if lazy else None
    try:
        return open_app(config, embedder)
    except (ModelError, StoreError) as exc:
        raise UsageError(str(exc)) from None


# -- commands ---------------------------------------------------------------------------------

def _tag(args: argparse.Namespace) -> int:
    config = _load_config(args)
    if not args.once:
        return _watch(args, config)
    if not args.dirs:
        raise UsageError("name at least one folder to tag, e.g. 'autotag --once ./clips'")
    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        raise UsageError(f"{show(missing[0])} does not exist; name an existing folder or file")
    return _tag_once(config, args.dirs, args.force)


def _tag_once(config, dirs: list[Path], force: bool) -> int:
    from autotag.files import find_clips

    exclude = [p for p in (config.outputs.previews, config.outputs.sidecar_dir) if p]
    unreadable: list[Path] = []

    def on_error(path: Path, reason: str) -> None:
        log.error("skipping %s: %s", show(path), reason)
        unreadable.append(path)

    clips = list(find_clips([absolute(d) for d in dirs], config.watch.ignore, exclude,
                            on_error))
    if not clips:
        log.warning("no clips found under %s", ", ".join(show(d) for d in dirs))
        return EXIT_FAILED if unreadable else EXIT_OK
    started = time.monotonic()
    results, todo = ([], clips) if force else _up_to_date(config, clips)
    if todo:  # the model loads only when there is work: a re-run over a library is instant
        from autotag.media import quiet_decoder

        quiet_decoder(log.isEnabledFor(logging.DEBUG))
        app = _open(config)
        try:
            with _Reporter(len(todo)) as reporter:
                results += app.pipeline.run(todo, force=force, on_result=reporter.result,
                                            on_windows=reporter.windows)
        finally:
            app.close()
    _summary(results, time.monotonic() - started)
    failed = unreadable or any(r.status == "failed" for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def _watch(args: argparse.Namespace, config) -> int:
    from autotag.app import open_app
    from autotag.media import quiet_decoder
    from autotag.model import ModelError
    from autotag.service import Daemon, DaemonError
    from autotag.store import StoreError

    if not args.dirs and not config.watch.paths:
        raise UsageError("name folders to watch, e.g. 'autotag ./clips', or set watch.paths")
    # A folder named on the command line must be there (a typo, or a mistyped subcommand, must
    # not start a daemon); watch.paths may be an unmounted share, watched for until it returns.
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        raise UsageError(f"{show(missing[0])} is not a folder; name folders to watch (commands: "
                         + ", ".join(c for c in COMMANDS if c != "tag") + ")")
    quiet_decoder(log.isEnabledFor(logging.DEBUG))
    daemon = Daemon(config, args.dirs, open_app=lambda c, embedder: open_app(c, embedder),
                    reload_config=lambda: _load_config(args))
    try:
        return daemon.run()
    except (DaemonError, ModelError, StoreError) as exc:
        raise UsageError(str(exc)) from None


def _up_to_date(config, clips: list[Path]) -> tuple[list, list[Path]]:
    """(results for clips already tagged with this model and vocabulary, the rest)."""
    from autotag.model import fingerprint
    from autotag.pipeline import ClipResult, up_to_date
    from autotag.vocabulary import vocabulary_fingerprint

    model = fingerprint(config.model.handle)
    vocabulary = vocabulary_fingerprint(config.vocabulary, model)
    store = _store(config)
    done, todo = [], []
    try:
        for path in clips:
            try:
                fresh = up_to_date(path, path.stat(), config, store, model, vocabulary)
            except OSError:
                fresh = False  # the pipeline reports it
            if fresh:
                done.append(ClipResult(path, "skipped", "up to date"))
            else:
                todo.append(path)
    finally:
        store.close()
    return done, todo


def _fetch_model(args: argparse.Namespace) -> int:
    from autotag.model import ModelError, fetch_model, hub_cache_dir

    config = _load_config(args)
    if "://" not in config.model.handle:
        print(f"model.handle is a local directory ({config.model.handle}); nothing to fetch")
        return EXIT_OK
    try:
        path = fetch_model(config.model.handle)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    print(f"model cached in {path} (cache: {hub_cache_dir()})")
    return EXIT_OK


# -- eval and calibrate (issue 7) ------------------------------------------------------------

def _eval_parser() -> argparse.ArgumentParser:
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
    _common(parser)
    return parser


def _eval(args: argparse.Namespace) -> int:
    from autotag.evaluate import EvalError, run_eval

    config = _load_config(args)
    try:
        evaluation = run_eval(config, args.dir, as_json=args.json, report=args.report,
                              templates=args.template)
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_FAILED if evaluation.labelled.failed else EXIT_OK


def _calibrate_parser() -> argparse.ArgumentParser:
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
    _common(parser)
    return parser


def _calibrate(args: argparse.Namespace) -> int:
    from autotag.calibrate import run_calibrate
    from autotag.evaluate import EvalError

    if args.write and args.model:
        raise UsageError("--write calibrates the configured model; set model.handle in the "
                         "config instead of passing --model")
    config = _load_config(args)
    try:
        calibration, written = run_calibrate(config, args.dir, target=args.precision,
                                             write=args.write, as_json=args.json)
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_FAILED if calibration.failed or (args.write and not written) else EXIT_OK


# -- search and retag (issue 5) ----------------------------------------------------------------

def _search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag search",
        description="Rank the clips autotag has tagged by how well they match free text, from "
                    "their stored embeddings: nothing is decoded. Clips gone or changed since "
                    "they were tagged are left out. Exit 1 when nothing is found.")
    parser.add_argument("query", nargs="+", metavar="QUERY",
                        help="what happens in the clips, e.g. someone skateboarding")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="how many clips to show (default: 10)")
    parser.add_argument("--under", type=Path, action="append", default=[], metavar="DIR",
                        help="only clips in this folder (repeat for several)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {path, score, segment} for scripts")
    parser.add_argument("--sheet", type=Path, metavar="FILE",
                        help="also write a contact sheet of the results (.jpg, .png or .webp)")
    _common(parser)
    return parser


def _search(args: argparse.Namespace) -> int:
    from autotag.config import default_cache_dir
    from autotag.model import LazyEmbedder, ModelError
    from autotag.search import Index, contact_sheet, search
    from autotag.vocabulary import embed_query

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if args.sheet:
        _check_sheet(args.sheet)
    config = _load_config(args)
    embedder = LazyEmbedder(config.model.handle, config.model.threads)
    store = _store(config)
    try:
        index = Index.load(store, embedder.fingerprint, [absolute(d) for d in args.under])
        if not len(index):
            where = " under " + ", ".join(map(show, args.under)) if args.under else ""
            log.warning("no clip tagged with this model is stored%s; tag a folder with "
                        "'autotag --once DIR' first", where)
            return EXIT_FAILED
        try:
            query, known = embed_query(" ".join(args.query), embedder, default_cache_dir())
        except ModelError as exc:
            raise UsageError(str(exc)) from None
        if not known:  # it would score every clip 0: a ranking that means nothing
            log.warning("the model knows none of the words of %r; rephrase it in plain English "
                        "words", " ".join(args.query))
            return EXIT_FAILED
        hits, stale = search(index, store, embedder.fingerprint, query, args.top,
                             config.tagging.min_score)
        if stale:
            log.warning("%d better-ranked clip(s) left out: gone or changed since they were "
                        "tagged ('autotag --once' re-tags changed ones)", stale)
        if args.sheet and hits:
            _write_sheet(args.sheet, contact_sheet(hits, store.thumbnails))
    finally:
        store.close()
    _print_hits(hits, args.json)
    return EXIT_OK if hits else EXIT_FAILED


def _check_sheet(path: Path) -> None:
    from autotag.search import SHEET_FORMATS

    if path.suffix.lower() not in SHEET_FORMATS:
        raise UsageError(f"--sheet {show(path)}: name a .jpg, .png or .webp file")
    if not absolute(path).parent.is_dir():
        raise UsageError(f"--sheet {show(path)}: its folder does not exist; create it first")


def _write_sheet(path: Path, image) -> None:
    from autotag.atomic import AtomicWriteError, write_atomic
    from autotag.search import encode_sheet

    try:
        write_atomic(absolute(path), encode_sheet(image, path))
    except (AtomicWriteError, OSError, ValueError) as exc:
        log.error("cannot write the contact sheet: %s", getattr(exc, "strerror", None) or exc)
        return
    log.info("contact sheet: %s", show(path))


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        import json

        print(json.dumps([h.to_json() for h in hits], indent=2))
    elif sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table()
        for name, justify in (("#", "right"), ("score", "right"), ("best at", "right"),
                              ("clip", "left")):
            table.add_column(name, justify=justify)
        for rank, h in enumerate(hits, 1):
            table.add_row(str(rank), f"{h.score:.2f}", _span(h.segment), show(h.record.path))
        Console().print(table)
    else:  # piped: one tab-separated line per clip
        for rank, h in enumerate(hits, 1):
            print(f"{rank}\t{h.score:.4f}\t{_span(h.segment)}\t{show(h.record.path)}")


def _span(segment) -> str:
    return f"{segment.start:.1f}–{segment.end:.1f} s"


def _store(config):
    from autotag.store import Store, StoreError

    try:
        return Store(config.state.store_path)
    except StoreError as exc:
        raise UsageError(str(exc)) from None


def _retag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag retag",
        description="Re-score the clips autotag has tagged (all, or those under DIR) against "
                    "the current vocabulary and tagging settings, from their stored "
                    "embeddings, and rewrite every output. Nothing is decoded; the video model "
                    "is not used.")
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="only clips in these folders (default: every stored clip)")
    _common(parser)
    return parser


def _retag(args: argparse.Namespace) -> int:
    from autotag.retag import retag, stored_clips

    config = _load_config(args)
    started = time.monotonic()
    app = _open(config, lazy=True)
    try:
        records = stored_clips(app.store, app.tagger.model, [absolute(d) for d in args.dirs])
        if not records:
            log.warning("no stored clip to re-tag%s; tag a folder with 'autotag --once DIR'",
                        " under " + ", ".join(map(show, args.dirs)) if args.dirs else "")
        with _Reporter(len(records), verb="re-tagging") as reporter:
            results = retag(app.tagger, app.store, records, on_result=reporter.result)
    finally:
        app.close()
    _summary(results, time.monotonic() - started, skipped="skipped (gone or changed)")
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


# command → (parser builder, handler). Each subcommand adds one line here.
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser],
                          Callable[[argparse.Namespace], int]]] = {
    "tag": (_tag_parser, _tag),
    "fetch-model": (_fetch_model_parser, _fetch_model),
    "eval": (_eval_parser, _eval),
    "calibrate": (_calibrate_parser, _calibrate),
    "search": (_search_parser, _search),
    "retag": (_retag_parser, _retag),
}


# -- progress and summary ---------------------------------------------------------------------

class _Reporter:
    """Per-clip lines and, on a terminal, a rich progress bar (clips, windows/s, ETA)."""

    def __init__(self, total: int, verb: str = "tagging") -> None:
        self.total = total
        self.verb = verb
        self.progress = None
        self.task = None
        self.window_count = 0
        self.started = time.monotonic()

    def __enter__(self) -> _Reporter:
        if _interactive() and self.total:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn(self.verb), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                     transient=True)
            self.task = self.progress.add_task(self.verb, total=self.total, rate="")
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress:
            self.progress.stop()

    def windows(self, n: int) -> None:
        self.window_count += n
        if self.progress:
            rate = self.window_count / max(time.monotonic() - self.started, 1e-9)
            self.progress.update(self.task, rate=f"{rate:.1f} windows/s")

    def result(self, result) -> None:
        if result.status == "failed":
            log.error("skipping %s: %s", show(result.path), result.reason)
        elif result.status in ("tagged", "reused"):
            tags = ", ".join(f"{t.label} {t.score:.2f}" for t in result.tags) or "no tag"
            log.info("%s %s: %s", result.status, show(result.path), tags)
        elif result.reason == "up to date":
            log.debug("%s %s: %s", result.status, show(result.path), result.reason)
        else:
            log.info("%s %s: %s", result.status, show(result.path), result.reason)
        if self.progress:
            self.progress.advance(self.task)


def _summary(results, seconds: float, skipped: str | None = None) -> None:
    counts = Counter(r.status for r in results)
    windows = sum(r.windows for r in results)
    rate = windows / seconds if seconds > 0 else 0.0
    rows = [("tagged", counts["tagged"]), ("tagged from stored embeddings", counts["reused"]),
            ("up to date" if skipped is None else skipped, counts["skipped"]),
            ("failed", counts["failed"])]
    if _interactive():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"autotag: {len(results)} clips in {seconds:.1f} s, "
                            f"{windows} windows ({rate:.1f}/s)")
        table.add_column("clips")
        table.add_column("count", justify="right")
        for name, count in rows:
            table.add_row(name, str(count), style="red" if name == "failed" and count else None)
        Console(stderr=True).print(table)
    else:
        log.info("done: %s; %d windows in %.1f s (%.1f/s)",
                 ", ".join(f"{count} {name}" for name, count in rows), windows, seconds, rate)
