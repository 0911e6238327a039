"""Request → path prefix → Host allow-list → token (cookie or Bearer) → same origin + CSRF for a
state change → the app → security headers on the response.

The web app serves a person's private videos, so every rule a browser or a neighbour could get
around lives here, in one ASGI middleware around the whole app, and nowhere else:

- DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 sends
  `Host: evil.example`. Only loopback names, IP literals (a rebinding needs a name) and the
  configured serve.hosts are answered (Django's ALLOWED_HOSTS, Jupyter's allow_remote_access).
- A token (serve.token_file), required off loopback: a request without it gets 401; the login
  form sets an HttpOnly, SameSite=Strict cookie; scripts send `Authorization: Bearer`.
  Compared in constant time; failed attempts are rate-limited per client address.
- Cross-site requests: a state change (POST, PUT, PATCH, DELETE) from a browser needs an
  Origin (or Referer) of this very host and the page's CSRF token (header X-CSRF-Token or form
  field `csrf`). A Bearer request is exempt: a cross-site page cannot set that header.
- Headers: Content-Security-Policy default-src 'self' (no inline script or style anywhere),
  frame-ancestors 'none', nosniff, and Cross-Origin-Resource-Policy same-origin so no other site
  can even embed a thumbnail or a clip.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

from autotag.errors import AutotagError

COOKIE = "autotag_session"
CSRF_HEADER = b"x-csrf-token"
CSRF_FIELD = "csrf"
LOGIN_FAILURES = 5  # distinct wrong tokens per client within LOGIN_WINDOW answered at once
LOGIN_WINDOW = 60.0  # seconds
LOGIN_MAX_DELAY = 8.0  # s; the longest a wrong token's answer is held back
LOGIN_CLIENTS = 10_000  # client addresses remembered at most
LOGIN_ATTEMPTS_KEPT = 64  # distinct wrong attempts remembered per client
MAX_BODY_BYTES = 64 * 1024  # any request's body: the app takes forms and small JSON only
MAX_FORM_BYTES = 64 * 1024  # a state-changing form body read to find its CSRF field
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC_PATHS = ("/login", "/healthz", "/static/")  # no private data: served without the token

CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def split_host(value: str) -> str:
    """A Host header's name without its port ('[::1]:8765' → '::1'), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class FailedLogins:
    """Wrong token attempts, counted per (client address, attempt) over the last LOGIN_WINDOW
    seconds: the same wrong token again (a stale cookie in an open tab) counts once. Past
    LOGIN_FAILURES of them a client's next wrong answer is held back, twice as long each time
    (up to LOGIN_MAX_DELAY): a back-off, never a ban, and the right token is always let in at
    once (issue 30: five wrong tries from anyone behind one proxy locked everyone out)."""

    def __init__(self, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW,
                 max_delay: float = LOGIN_MAX_DELAY) -> None:
        self.limit, self.window, self.max_delay = limit, window, max_delay
        self._failures: dict[str, dict[bytes, float]] = {}  # client → attempt digest → when
        self._lock = threading.Lock()

    def failed(self, client: str, attempt: str) -> float:
        """Record a wrong attempt; the seconds to hold its answer back."""
        now = time.monotonic()
        digest = hashlib.sha256(attempt.encode("utf-8", "replace")).digest()[:16]
        with self._lock:
            if client not in self._failures and len(self._failures) >= LOGIN_CLIENTS:
                self._forget_oldest(now)
            attempts = self._failures.setdefault(client, {})
            for key in [k for k, t in attempts.items() if now - t > self.window]:
                del attempts[key]
            attempts[digest] = now
            while len(attempts) > LOGIN_ATTEMPTS_KEPT:
                del attempts[min(attempts, key=attempts.__getitem__)]
            over = len(attempts) - self.limit
        return 0.0 if over <= 0 else min(self.max_delay, 2.0 ** (over - 1))

    def count(self, client: str) -> int:
        """Distinct wrong attempts from this client within the window."""
        now = time.monotonic()
        with self._lock:
            return sum(now - t <= self.window for t in self._failures.get(client, {}).values())

    def _forget_oldest(self, now: float) -> None:
        """A flood of addresses: drop those quiet longest (never all at once)."""
        by_age = sorted(self._failures, key=lambda c: max(self._failures[c].values(),
                                                          default=0.0))
        for client in by_age[:max(1, len(by_age) // 4)]:
            del self._failures[client]


async def held_back(seconds: float) -> None:
    """Wait before answering a wrong token (FailedLogins.failed's back-off)."""
    if seconds > 0:
        await asyncio.sleep(seconds)


class BodyLimit:
    """Request bodies past `max_bytes` are refused with 413 as they stream in: a Content-Length
    past it before reading a byte, a chunked body at the chunk that crosses it; nothing past
    the cap is ever held (issue 30: a 300 MB POST took the server from 124 to 851 MB)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _headers(scope).get(b"content-length", b"0")
        if not length.strip().isdigit() or int(length) > self.max_bytes:
            await _plain(send, 413, f"the request body is larger than {self.max_bytes} bytes",
                         [(b"connection", b"close")])
            return
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(413, f"the request body is larger than {self.max_bytes} "
                                         "bytes")
            return message

        async def sending(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if not started:
                await _plain(send, 413, f"the request body is larger than {self.max_bytes} "
                                        "bytes", [(b"connection", b"close")])


class _TooLarge(HTTPException, AutotagError):
    """An HTTPException, so the app's own handler answers 413 where the app reads the body;
    BodyLimit answers it when nothing else has."""


class Security:
    """The one security middleware; see the module docstring for its rules."""

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: Iterable[str] = (),
                 root_path: str | None = None, unauthorized: ASGIApp | None = None) -> None:
        self.app = app
        self.token = token
        self.hosts = {h.lower() for h in hosts}
        self.root_path = root_path or ""
        self.unauthorized = unauthorized
        self.failures = FailedLogins()
        # stateless sessions: the cookie is derived from the token (rotate the token to end
        # every session); CSRF tokens from a secret of this process (a reload after a restart)
        self.session = (hmac.new(token.encode(), b"autotag-session", hashlib.sha256).hexdigest()
                        if token else None)
        self._secret = secrets.token_bytes(32)

    # -- the pieces the routes use ------------------------------------------------------------

    def csrf_token(self, scope: dict) -> str:
        session = _cookies(scope).get(COOKIE, "")
        return hmac.new(self._secret, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()

    def check_token(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(candidate.encode(),
                                                              self.token.encode())

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = self._with_prefix(scope)
        send = _with_headers(send)
        headers = _headers(scope)
        host = split_host(headers.get(b"host", b"").decode("latin-1"))
        if not self._allowed_host(host):
            await _plain(send, 400, "unknown host: add it to serve.hosts in the config to allow it")
            return
        client = (scope.get("client") or ("?", 0))[0]
        route = _route_path(scope)
        state = scope.setdefault("state", {})
        state["security"] = self
        authenticated, bearer, delay = self._authenticate(headers, scope, client)
        await held_back(delay)
        state["authenticated"] = authenticated
        if self.token and not authenticated and not route.startswith(PUBLIC_PATHS):
            if self.unauthorized is not None and scope["method"] == "GET" \
                    and not route.startswith("/api/"):
                await self.unauthorized(scope, receive, send)
            else:
                await _plain(send, 401, "a token is needed: log in, or send Authorization: "
                                        "Bearer TOKEN", [(b"www-authenticate", b"Bearer")])
            return
        if scope["method"] in UNSAFE_METHODS and not bearer:
            problem, receive = await self._cross_site(scope, headers, receive, host)
            if problem:
                await _plain(send, 403, problem)
                return
        await self.app(scope, receive, send)

    def _with_prefix(self, scope: dict) -> dict:
        """Serve under serve.root_path whether or not the proxy strips it: Starlette matches
        routes on path minus root_path, and the pages' links start with root_path."""
        if not self.root_path:
            return scope
        scope = dict(scope)
        path = scope["path"]
        if path != self.root_path and not path.startswith(self.root_path + "/"):
            scope["path"] = self.root_path + path  # the proxy stripped the prefix
            scope["raw_path"] = scope["path"].encode()
        scope["root_path"] = self.root_path
        return scope

    def _allowed_host(self, host: str) -> bool:
        return bool(host) and (is_loopback_host(host) or _is_ip(host) or host in self.hosts)

    def _authenticate(self, headers: dict[bytes, bytes], scope: dict, client: str):
        """(authenticated, by Bearer, seconds to hold a wrong attempt's answer back). The right
        token or session is let in whatever failed before it (FailedLogins)."""
        if not self.token:
            return True, False, 0.0
        given_bearer = headers.get(b"authorization", b"").decode("latin-1")
        cookie = _cookies(scope).get(COOKIE)
        if not given_bearer and cookie is None:
            return False, False, 0.0
        if given_bearer:
            scheme, _, value = given_bearer.partition(" ")
            if scheme.lower() == "bearer" and self.check_token(value.strip()):
                return True, True, 0.0
            attempt = "bearer:" + value.strip()
        elif hmac.compare_digest(cookie.encode("utf-8", "replace"), self.session.encode()):
            return True, False, 0.0
        else:
            attempt = "cookie:" + cookie
        return False, False, self.failures.failed(client, attempt)

    async def _cross_site(self, scope: dict, headers: dict[bytes, bytes], receive: Callable,
                          host: str) -> tuple[str | None, Callable]:
        """A problem with a browser's state change (None: same origin, right CSRF token), and
        the receive to pass on (a form body read to find its field is replayed)."""
        origin = headers.get(b"origin", b"").decode("latin-1") or \
            headers.get(b"referer", b"").decode("latin-1")
        if not origin or origin == "null" or not _same_origin(origin, headers):
            return "refused: a change must come from this app's own page (same origin)", receive
        expected = self.csrf_token(scope)
        given = headers.get(CSRF_HEADER, b"").decode("latin-1")
        if not given and headers.get(b"content-type", b"").startswith(
                b"application/x-www-form-urlencoded"):
            body, receive = await _read_body(receive)
            if body is None:
                return "refused: the form is too large", receive
            given = parse_qs(body.decode("latin-1")).get(CSRF_FIELD, [""])[0]
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            return "refused: the page's CSRF token is missing or stale; reload the page", receive
        return None, receive


def _same_origin(origin: str, headers: dict[bytes, bytes]) -> bool:
    """Origin (or Referer) names the host the request was sent to."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and \
        parts.netloc.lower() == headers.get(b"host", b"").decode("latin-1").strip().lower()


def _route_path(scope: dict) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _headers(scope: dict) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _cookies(scope: dict) -> dict[str, str]:
    raw = _headers(scope).get(b"cookie", b"").decode("latin-1")
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # noqa: BLE001 - a malformed Cookie header is no cookie
        return {}
    return {k: m.value for k, m in jar.items()}


async def _read_body(receive: Callable) -> tuple[bytes | None, Callable]:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None, receive
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_FORM_BYTES:
            return None, receive
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect

    return body, replay


def _with_headers(send: Callable) -> Callable:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in HEADERS if k not in present]
            if b"cache-control" not in present:
                extra.append((b"cache-control", b"no-store"))
            message = {**message, "headers": list(message.get("headers", [])) + extra}
        await send(message)
    return wrapped


async def _plain(send: Callable, status: int, text: str,
                 headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


