"""What `eval` and `calibrate` share: the labelled folder checked before the model loads, then
embedded through the engine behind a progress bar; JSON on stdout."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from autotag.cli.common import UsageError, interactive


def check_folder(root: Path, labels) -> None:
    """The folder's layout, before the model loads: a typo costs no wait; UsageError."""
    from autotag.analysis.labelling import EvalError, check_layout

    try:
        check_layout(root, labels)
    except EvalError as exc:
        raise UsageError(str(exc)) from None


def embed_labelled(app, root: Path, show_progress: bool = True):
    """The labelled folder embedded by the app's engine (analysis.labelled.Labelled), with a
    progress bar on a terminal; UsageError when there is nothing to use."""
    from autotag.analysis.labelling import EvalError, load_labelled

    try:
        with progress("embedding", enabled=show_progress) as on_progress:
            return load_labelled(root, app.engine, on_progress)
    except EvalError as exc:
        raise UsageError(str(exc)) from None


@contextlib.contextmanager
def progress(label: str, enabled: bool = True) -> Iterator:
    """on_progress(done, total): a transient rich progress bar on stderr when it is a terminal;
    else nothing."""
    if not (enabled and interactive()):
        yield lambda done, total: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   transient=True)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


def print_json(data: dict) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
