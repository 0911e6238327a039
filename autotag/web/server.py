"""serve config → checked address and token → uvicorn: in the foreground (`autotag serve`) or in a
thread the daemon owns (serve.listen set).

Loopback (127.0.0.1:8765) by default; any other address needs serve.token_file, or autotag
refuses to start. The daemon's thread runs uvicorn without its signal handlers (uvicorn installs
them only in the main thread): the daemon's own SIGTERM handler stops it with the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from autotag.config import DEFAULT_LISTEN, Config, ConfigError, parse_listen
from autotag.web.security import is_loopback_host

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # seconds for open connections to finish when the daemon stops
TOKEN_MIN = 16  # characters a token must have


def address(config: Config, listen: str | None = None) -> tuple[str, int]:
    """--listen, else serve.listen, else DEFAULT_LISTEN → (host, port); ConfigError."""
    if listen is not None:
        return parse_listen(listen, "--listen")
    return parse_listen(config.serve.listen or DEFAULT_LISTEN)


def check_bind(host: str, port: int, key: str = "serve.listen") -> None:
    """ConfigError, one line with the reason, if host:port cannot be listened on (in use, not an
    address of this machine): found before uvicorn, which would log it in two lines."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(where)
    except OSError as exc:
        raise ConfigError(f"the web app cannot listen on {host}:{port} "
                          f"({getattr(exc, 'strerror', None) or exc}); set {key} "
                          "to another address or port") from None


def token_for(config: Config, host: str) -> str | None:
    """The token to require (None: no token configured, allowed on loopback only);
    ConfigError with the one line that fixes it."""
    path = config.serve.token_file
    if path is None:
        if not is_loopback_host(host):
            raise ConfigError(
                f"the web app would listen on {host}, which other machines can reach: set "
                "serve.token_file to a file holding a secret token (e.g. openssl rand -hex 32 "
                "> ~/.config/autotag/token), or listen on 127.0.0.1")
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"'serve.token_file': cannot read {path} "
                          f"({getattr(exc, 'strerror', None) or exc}); create it (e.g. openssl "
                          "rand -hex 32 > FILE) or fix its permissions") from None
    if len(token) < TOKEN_MIN:
        raise ConfigError(f"'serve.token_file': {path} holds {len(token)} characters; a token "
                          f"needs at least {TOKEN_MIN} (e.g. openssl rand -hex 32 > {path})")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s can be read by other users; chmod 600 it", path)
    return token


def _uvicorn_config(app, host: str, port: int, *, main_thread: bool):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                          server_header=False, proxy_headers=True, lifespan="off",
                          timeout_graceful_shutdown=STOP_TIMEOUT if main_thread else 1)


def serve_forever(app, host: str, port: int, on_started: Callable[[], None] | None = None
                  ) -> bool:
    """Run the app until SIGINT or SIGTERM, then finish open requests and return (exit 0, as
    systemd expects of a clean stop: uvicorn's own handlers re-raise the signal, which ends
    the process with it). False if it could not bind."""
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(app, host, port, main_thread=True))
    server.capture_signals = contextlib.nullcontext  # ours, below, stop it
    if on_started is not None:
        _when_started(server, on_started)

    def stop(*_: object) -> None:
        server.should_exit = True
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except SystemExit:  # uvicorn's answer to an address it cannot bind (it logged why)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return server.started


def _when_started(server, callback: Callable[[], None]) -> None:
    original = server.startup

    async def startup(*args, **kwargs):
        await original(*args, **kwargs)
        if server.started:
            callback()
    server.startup = startup


class WebServer:
    """uvicorn in a thread: start() returns once it listens (or raises ConfigError when it
    cannot bind), stop() ends it and joins the thread."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        self.host, self.port = host, port
        self._server = uvicorn.Server(_uvicorn_config(app, host, port, main_thread=False))
        self._thread = threading.Thread(target=self._server.run, name="autotag-web",
                                        daemon=True)
        self._started = threading.Event()
        _when_started(self._server, self._started.set)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        while not self._started.wait(0.05):
            if not self._thread.is_alive() or timeout <= 0:
                self.stop()
                raise ConfigError(f"the web app cannot listen on {self.host}:{self.port} "
                                  "(in use, or not an address of this machine); set "
                                  "serve.listen to another address or port")
            timeout -= 0.05

    @property
    def port_bound(self) -> int:
        """The port listened on (the OS's choice when started with port 0)."""
        for server in getattr(self._server, "servers", []):
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.port

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT + 2)
