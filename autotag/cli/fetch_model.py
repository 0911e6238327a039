"""`autotag fetch-model`: the model into the persistent cache once, so a service starts offline."""

from __future__ import annotations

import argparse

from autotag.cli.common import EXIT_OK, Context, UsageError, add_common, load_config


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag fetch-model",
        description="Download the model into the persistent cache once, so the service "
                    "(or an offline machine sharing the cache) runs without network access.")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.model import ModelError, fetch_model, hub_cache_dir

    config = load_config(args)
    if "://" not in config.model.handle:
        print(f"model.handle is a local directory ({config.model.handle}); nothing to fetch")
        return EXIT_OK
    try:
        path = fetch_model(config.model.handle)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    print(f"model cached in {path} (cache: {hub_cache_dir()})")
    return EXIT_OK
