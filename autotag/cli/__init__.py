"""argv → command module → library → exit code. One small module per command; none computes.

`autotag [--once] DIR...` tags (cli/tag.py); `autotag COMMAND ...` runs a subcommand. Exit codes:
0 every clip tagged (or up to date), 1 some clips failed (each named on stderr with its
reason), 2 usage, configuration or startup errors (one line naming the fix). Commands import
what they need inside their `run`, so `--help` never imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from autotag.cli import (
    backfill,
    calibrate,
    evaluate,
    fetch_model,
    init,
    quantize,
    retag,
    review,
    search,
    serve,
    tag,
)
from autotag.cli.common import EXIT_USAGE, SUBCOMMANDS, Context, UsageError, setup_logging
from autotag.model import Embedder

# command → its module (each has `build() -> ArgumentParser` and `run(args, ctx) -> int`)
COMMANDS = {
    "tag": tag,
    "init": init,
    "fetch-model": fetch_model,
    "search": search,
    "retag": retag,
    "eval": evaluate,
    "calibrate": calibrate,
    "backfill": backfill,
    "quantize": quantize,
    "serve": serve,
    "review": review,
}
assert tuple(COMMANDS)[1:] == SUBCOMMANDS


def entry() -> NoReturn:
    """The `autotag` command: main(), then exit at once. Once a command has returned, its
    outputs are written (atomically) and its store closed; what is left is the interpreter's
    teardown of TensorFlow and OpenVINO, 0.9 s of a daemon's 1 s stop on SIGTERM (python -m
    benchmarks.idle). Streams and log handlers are flushed first."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None, *, embedder: Embedder | None = None) -> int:
    """Run one command. embedder: use this model instead of loading model.handle (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse's subparsers cannot mix with a positional DIR list, so the first word decides.
    name = argv[0] if argv and argv[0] in COMMANDS else "tag"
    command = COMMANDS[name]
    parser = command.build()
    args = parser.parse_args(argv[1:] if name != "tag" else argv)
    setup_logging(getattr(args, "debug", False))
    try:
        return command.run(args, Context(embedder))
    except UsageError as exc:
        print(f"autotag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("autotag: interrupted", file=sys.stderr)
        return 130
