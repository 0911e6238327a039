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

from autotag.config import DEFAULT_LISTEN, Config, ConfigError, ServeConfig, parse_listen
from autotag.web.security import is_loopback_host

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # seconds for open connections to finish when the daemon stops
TOKEN_MIN = 16  # characters a token must have
# What one client can make the server hold (issue 30: 13 slow connections were all still open
# after 90 s). uvicorn closes an idle keep-alive connection; RequestDeadline, below, a request
# whose head or body does not arrive in time; h11 refuses a head larger than this.
KEEP_ALIVE = 5.0  # s between requests on one connection
REQUEST_TIMEOUT = 20.0  # s from a request's first byte (or the connection) to its last
MAX_HEAD_BYTES = 16 * 1024  # a request head: a few cookies and headers


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


def _uvicorn_config(app, host: str, port: int, *, main_thread: bool,
                    serve: ServeConfig | None = None):
    """Forwarded headers (X-Forwarded-For, -Proto) are believed only from serve.trusted_proxies:
    none by default, so no client can pick the address the login back-off counts it by."""
    import uvicorn

    serve = serve or ServeConfig()
    proxies = list(serve.trusted_proxies)
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                          server_header=False, lifespan="off",
                          proxy_headers=bool(proxies), forwarded_allow_ips=proxies or [],
                          http=guarded_protocol(), timeout_keep_alive=KEEP_ALIVE,
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                          limit_concurrency=serve.max_connections,
                          timeout_graceful_shutdown=STOP_TIMEOUT if main_thread else 1)


def guarded_protocol():
    """uvicorn's h11 protocol with a deadline on each request: from the connection (or the
    first byte of a request after a keep-alive) until its body has all arrived, at most
    REQUEST_TIMEOUT seconds, else the connection is closed. uvicorn itself times only the idle
    gap between requests: half a head, no head at all, or a body that never comes held a
    connection forever. A response being sent is not timed."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestDeadline(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm()  # the request is in; its response is not timed
            elif self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(REQUEST_TIMEOUT, self._late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self) -> None:
            self._deadline = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):  # head or body still due
                log.debug("closing a connection whose request did not arrive in %.0f s",
                          REQUEST_TIMEOUT)
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # a pipelined request may be half in already

    return RequestDeadline


def serve_forever(app, host: str, port: int, on_started: Callable[[], None] | None = None,
                  serve: ServeConfig | None = None) -> bool:
    """Run the app until SIGINT or SIGTERM, then finish open requests and return (exit 0, as
    systemd expects of a clean stop: uvicorn's own handlers re-raise the signal, which ends
    the process with it). False if it could not bind."""
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(app, host, port, main_thread=True, serve=serve))
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

    def __init__(self, app, host: str, port: int, serve: ServeConfig | None = None) -> None:
        import uvicorn

        self.host, self.port = host, port
        self._server = uvicorn.Server(_uvicorn_config(app, host, port, main_thread=False,
                                                      serve=serve))
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
