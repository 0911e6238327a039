"""`autotag search QUERY`: rank the stored clips by free text; print a table, lines or JSON."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from autotag.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Context,
    UsageError,
    add_common,
    load_config,
    open_store,
    startup_error,
)
from autotag.files import absolute, show

log = logging.getLogger("autotag")


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag search",
        description="Rank the clips autotag has tagged by how well they match free text, from "
                    "their stored embeddings: nothing is decoded. Clips gone or changed since "
                    "they were tagged are left out. Exit 1 when nothing is found.")
    parser.add_argument("query", nargs="*", metavar="QUERY",
                        help="what happens in the clips, e.g. someone skateboarding")
    parser.add_argument("--like", metavar="CLIP[@SECONDS]",
                        help="more like this: rank by a tagged clip's own embedding (or the "
                             "moment at SECONDS), from the store, instead of by text")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="how many clips to show (default: 10)")
    parser.add_argument("--under", type=Path, action="append", default=[], metavar="DIR",
                        help="only clips in this folder (repeat for several)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {path, score, segment} for scripts")
    parser.add_argument("--sheet", type=Path, metavar="FILE",
                        help="also write a contact sheet of the results (.jpg, .png or .webp)")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.config import default_cache_dir
    from autotag.model import LazyEmbedder, ModelError
    from autotag.runtimes.shared_text import socket_for
    from autotag.search import Without, contact_sheet, search
    from autotag.vocabulary import embed_query

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    if bool(args.query) == bool(args.like):
        raise UsageError("give a query (what happens in the clips) or --like CLIP, not both")
    if args.sheet:
        _check_sheet(args.sheet)
    config = load_config(args)
    # the text model loads only for a query not in the text-embedding cache, and then in the
    # child every search of this user shares (it ends itself after 10 min without a query): the
    # first new query of a session waits for TensorFlow to start, the next ones do not
    embedder = ctx.embedder
    if embedder is None:
        embedder = LazyEmbedder.from_config(config.model)
        embedder.text_socket = socket_for(default_cache_dir(), embedder.fingerprint)
    store = open_store(config)
    try:
        index = _index(store, embedder.fingerprint, [absolute(d) for d in args.under])
        if not len(index):
            where = " under " + ", ".join(map(show, args.under)) if args.under else ""
            log.warning("no clip tagged with this model is stored%s; tag a folder with "
                        "'autotag --once DIR' first", where)
            return EXIT_FAILED
        if args.like:
            query, own = _like(args.like, store, embedder.fingerprint, config)
            index = Without(index, own)  # the clip itself; its copies stay (the same content)
        else:
            try:
                query, known = embed_query(" ".join(args.query), embedder, default_cache_dir())
            except ModelError as exc:
                raise startup_error(exc, config) from None
            if not known:  # it would score every clip 0: a ranking that means nothing
                log.warning("the model knows none of the words of %r; rephrase it in plain "
                            "English words", " ".join(args.query))
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


def _index(store, model: str, under: list[Path]):
    """What the query ranks: under folders, their clips' embeddings read from the store (exact);
    else the search index (search.vectors.open_index, the one the web app ranks through too),
    built here if it is missing or unsound, with progress."""
    from autotag.search import Index
    from autotag.search.vectors import open_index

    if under:
        return Index.load(store, model, under)
    with _progress("building the search index") as progress:
        return open_index(store, model, progress=progress)


@contextlib.contextmanager
def _progress(what: str):
    """progress(done, total): a rich bar on a terminal, a log line per step otherwise."""
    if not sys.stderr.isatty():
        yield lambda done, total: log.info("%s: %d of %d clips", what, done, total)
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        tasks: list = []  # added at the first step: no bar at all when nothing is built

        def step(done: int, total: int) -> None:
            if not tasks:
                tasks.append(bar.add_task(what, total=total))
            bar.update(tasks[0], completed=done, total=total)

        yield step


def _like(value: str, store, model: str, config):
    """--like CLIP[@SECONDS] → (query vector, the clip's path); UsageError naming the fix."""
    from autotag.search import like_vector

    name, at = value, None
    head, sep, tail = value.rpartition("@")
    if sep and not Path(value).exists():
        try:
            name, at = head, float(tail)
        except ValueError:
            pass
    path = absolute(Path(name))
    record = store.file(path)
    if record is None or record.status != "tagged":
        raise UsageError(f"--like {show(path)}: not a clip autotag tagged; tag it with "
                         "'autotag --once' first")
    vector = like_vector(store, model, record, at, config.tagging.min_score)
    if vector is None:
        raise UsageError(f"--like {show(path)}: its embeddings for this model are not stored; "
                         "run 'autotag --once --force' on it")
    return vector, path


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
