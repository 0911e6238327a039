"""serve.listen → the web app in a thread of the daemon, over the daemon's app and live status.

The web app learns the daemon's status through the callable it is handed (the daemon's
status_snapshot), never by importing the daemon; a reload hands it the new app's library.
uvicorn runs in a thread web/server.py owns, its signal handlers off (the daemon's own handle
SIGTERM), and stops with the rest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from autotag.config import Config

log = logging.getLogger(__name__)


class WebHost:
    """The daemon's web server: checked before the model loads, started, given each new app on
    a reload, stopped. status(): the daemon's snapshot; reload(): what an edit in the app's
    config forms asks of the daemon."""

    def __init__(self, config: Config, status: Callable[[], dict],
                 reload: Callable[..., None]) -> None:
        self.status = status
        self.reload = reload
        self._address = self._check(config)  # before the model loads: a bad address fails now
        self._server = None
        self._web_app = None

    @staticmethod
    def _check(config: Config) -> tuple[str, int, str | None] | None:
        """(host, port, token) the web app is to serve on, None when serve.listen is not set;
        ConfigError (exit 2) if it may not (off loopback without a token) or cannot listen."""
        if not config.serve.listen:
            return None
        from autotag.web.server import address, check_bind, token_for

        host, port = address(config)
        token = token_for(config, host)
        check_bind(host, port)
        return host, port, token

    @property
    def port(self) -> int | None:
        """The port the web app listens on (None: not serving)."""
        return self._server.port_bound if self._server is not None else None

    def start(self, app) -> None:
        """The web app in a thread of this process, over this app's store, vocabulary and
        model, with the daemon's live status."""
        if self._address is None:
            return
        from autotag.web.routes import create_app
        from autotag.web.server import WebServer

        host, port, token = self._address
        self._web_app = create_app(self._library(app), token, reload=self.reload)
        self._server = WebServer(self._web_app, host, port, app.config.serve)
        self._server.start()
        shown = f"[{host}]" if ":" in host else host
        log.info("serving the web app at http://%s:%d%s/", shown, self._server.port_bound,
                 app.config.serve.root_path or "")

    def swap(self, app) -> None:
        """A reload: the pages read the new store, vocabulary and thresholds."""
        if self._web_app is None:
            return
        previous = self._web_app.state.library
        self._web_app.state.library = self._library(app)
        previous.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._web_app.state.library.close()

    def _library(self, app):
        from autotag.web.library import open_library

        library = open_library(app, status=self.status)
        library.jobs.handed_to_daemon(os.getpid())  # its queue is the outputs' progress
        return library
