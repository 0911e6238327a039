"""`autotag serve`: the web app over the state store (search, a clip's moment, tags, status)."""

from __future__ import annotations

import argparse
import logging

from autotag.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Context,
    add_common,
    load_config,
    open_app,
    startup_error,
)

log = logging.getLogger("autotag")


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotag serve",
        description="Serve the web app: search the clips autotag tagged by what happens in "
                    "them, open one at the moment it matches, browse tags, see the daemon's "
                    "status. Listens on 127.0.0.1:8765 unless serve.listen or --listen says "
                    "otherwise; any address but loopback needs serve.token_file. A daemon "
                    "with serve.listen set serves the same app itself.")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="the address to listen on (default: serve.listen, else "
                             "127.0.0.1:8765)")
    add_common(parser)
    return parser


def run(args: argparse.Namespace, ctx: Context) -> int:
    from autotag.config import ConfigError
    from autotag.web.app import create_app, open_library
    from autotag.web.server import address, check_bind, serve_forever, token_for

    config = load_config(args)
    try:
        host, port = address(config, args.listen)
        token = token_for(config, host)
        check_bind(host, port, "--listen" if args.listen else "serve.listen (or --listen)")
    except ConfigError as exc:
        raise startup_error(exc, config) from None
    app = open_app(config, ctx, lazy=True)  # the text model only for a new query
    opened = [app]  # every app opened, closed at the end (a reload opens another)
    try:
        library = open_library(app)
        web = create_app(library, token, reload=lambda: _reload(args, ctx, web, opened))
        shown = f"[{host}]" if ":" in host else host
        root = config.serve.root_path or ""

        def started() -> None:
            log.info("serving %d clips at http://%s:%d%s/ (Ctrl-C stops)", len(library.index),
                     shown, port, root)
        try:
            if not serve_forever(web, host, port, started, config.serve):
                log.error("cannot listen on %s:%d (in use, or not an address of this machine); "
                          "choose another with --listen", shown, port)
                return EXIT_USAGE
        finally:
            web.state.library.close()
    finally:
        for each in opened:
            each.close()
    return EXIT_OK


def _reload(args: argparse.Namespace, ctx: Context, web, opened: list) -> None:
    """The app edited the config (calibrated thresholds): read it again here, and tell a
    running daemon of the same store to (SIGHUP), so both tag and show by the new one."""
    import signal

    from autotag.daemon.status import read_status, signal_daemon, status_path
    from autotag.web.app import open_library

    config = load_config(args)
    app = open_app(config, ctx, lazy=True)
    opened.append(app)
    previous, web.state.library = web.state.library, open_library(app)
    previous.close()
    daemon = read_status(status_path(config.state.store_path))
    if daemon.get("state") in ("watching", "reloading"):
        if signal_daemon(daemon.get("pid"), config.state.store_path, signal.SIGHUP):
            log.info("asked the daemon (pid %d) to reload the configuration", daemon["pid"])
        else:
            log.warning("the status file names pid %s, which is not this store's daemon; "
                        "reload the daemon yourself (systemctl reload autotag)",
                        daemon.get("pid"))
