"""`autotag fetch-model`: the model into the persistent cache once, so a service starts offline."""

from __future__ import annotations

import argparse

from autotag.cli.common import EXIT_OK, Context, add_common, load_config, startup_error


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag fetch-model",
        description="Download the model into the persistent cache once, so the service "
                    "(or an offline machine sharing the cache) runs without network access; with "
                    "model.runtime on OpenVINO, also convert the video model for the CPU once "
                    "(a few seconds), so a service starts fast.")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.model import ModelError, fetch_model, hub_cache_dir, prepare_runtime

    config = load_config(args)
    try:
        if "://" in config.model.handle:
            path = fetch_model(config.model.handle)
            print(f"model cached in {path} (cache: {hub_cache_dir()})")
        else:
            print(f"model.handle is a local directory ({config.model.handle}); nothing to fetch")
        converted = prepare_runtime(config.model)
    except ModelError as exc:
        raise startup_error(exc, config) from None
    if converted is not None:
        print(f"video model converted for OpenVINO in {converted}")
    return EXIT_OK
