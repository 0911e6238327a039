"""`autotag init [PATH]`: write the documented default config, never over an existing file."""

from __future__ import annotations

import argparse
from pathlib import Path

from autotag.cli.common import EXIT_OK, Context, UsageError


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag init",
        description="Write the documented default config.yaml (vocabulary, tagging, outputs, "
                    "watch, model), to edit before the first run. An existing file is kept.")
    parser.add_argument("path", nargs="?", type=Path, metavar="PATH",
                        help="where to write it (default: $XDG_CONFIG_HOME/autotag/config.yaml, "
                             "which autotag reads when there is no ./config.yaml)")
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.atomic import AtomicWriteError, write_atomic
    from autotag.config import default_config_text, user_config_path

    path = args.path or user_config_path()
    if path.is_dir():
        path = path / "config.yaml"
    if path.exists():
        raise UsageError(f"{path} exists; edit it, or name another PATH")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, default_config_text().encode())
    except (AtomicWriteError, OSError) as exc:
        raise UsageError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}; "
                         "name a writable PATH") from None
    print(f"wrote {path}; edit its vocabulary and outputs, then run 'autotag --once DIR'")
    here = Path.cwd() / "config.yaml"
    if args.path is None and here.is_file():  # e.g. in autotag's own repository
        print(f"note: {here} is read first when autotag runs in {here.parent}; edit that one, "
              f"or pass --config {path}")
    return EXIT_OK
