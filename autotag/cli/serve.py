"""`autotag serve`: the web app over the state store (search, a clip's moment, tags, status)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

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
    from autotag.web.jobs import Reloader
    from autotag.web.library import open_library
    from autotag.web.routes import create_app
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
    lock = threading.Lock()  # one reload at a time: a page's and a SIGHUP's

    def reload() -> None:
        with lock:
            _reload(args, ctx, web, opened)
    # SIGHUP (systemctl reload): re-read the config, as the daemon does, in a thread of ours
    reloader = Reloader(reload)
    try:
        library = open_library(app)
        web = create_app(library, token, reload=reload)
        shown = f"[{host}]" if ":" in host else host
        root = config.serve.root_path or ""

        def started() -> None:
            log.info("serving %d clips at http://%s:%d%s/ (Ctrl-C stops)", len(library.index),
                     shown, port, root)
        reloader.start()
        hangup = signal.signal(signal.SIGHUP, reloader.request)
        try:
            if not serve_forever(web, host, port, started, config.serve):
                log.error("cannot listen on %s:%d (in use, or not an address of this machine); "
                          "choose another with --listen", shown, port)
                return EXIT_USAGE
        finally:
            signal.signal(signal.SIGHUP, hangup)
            reloader.close()
            web.state.library.close()
    finally:
        for each in opened:
            each.close()
    return EXIT_OK


def _reload(args: argparse.Namespace, ctx: Context, web, opened: list) -> None:
    """The config changed (the app edited it: a taught tag, calibrated thresholds; or SIGHUP):
    read it again here, and bring every output up to date: a running daemon of the same store
    is told to (SIGHUP; one writer of the outputs), else this process re-tags the stale clips
    from their stored embeddings in the background (web.jobs, GET /api/jobs)."""
    from autotag.status import read_status, signal_daemon, status_path
    from autotag.web.library import open_library

    log.info("reloading the configuration")
    config = load_config(args)
    app = open_app(config, ctx, lazy=True)
    opened.append(app)
    library = open_library(app)
    previous, web.state.library = web.state.library, library
    previous.close()  # stops its job, if one runs: the new one covers what it left
    daemon = read_status(status_path(config.state.store_path))
    if daemon.get("state") in ("watching", "reloading"):
        if signal_daemon(daemon.get("pid"), config.state.store_path, signal.SIGHUP):
            log.info("asked the daemon (pid %d) to reload the configuration", daemon["pid"])
            library.jobs.handed_to_daemon(daemon["pid"])
            return
        log.warning("the status file names pid %s, which is not this store's daemon; "
                    "reload the daemon yourself (systemctl reload autotag)", daemon.get("pid"))
    library.jobs.start(app.rule, app.tagger, app.store)
