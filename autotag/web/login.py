"""The token form → security.Security's check (wrong tokens held back) → the session cookie;
logging out removes it.

Security (web/security.py) decides who may see what; these routes only let a person prove the
token and keep the session in a cookie (HttpOnly, SameSite=Strict, under the app's prefix).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from autotag.web import params
from autotag.web.pages import render
from autotag.web.security import COOKIE, Security, held_back

SESSION_SECONDS = 30 * 86400  # how long a login lasts


def page_login(request: Request) -> Response:
    """The token form, which sends a person back to ?next= once the token is right."""
    return render(request, "login.html",
                  {"error": None, "next": params.safe_next(request.query_params.get("next"))})


async def login(request: Request) -> Response:
    """The token form: a right token sets the session cookie; wrong ones are rate-limited."""
    security: Security = request.scope["state"]["security"]
    form = await params.form(request)
    client = request.client.host if request.client else "?"
    next_url = params.safe_next(form.get("next"))
    if not security.token:
        return RedirectResponse(params.prefix(request) + next_url, 303)
    attempt = str(form.get("token", "")).strip()
    if not security.check_token(attempt):  # the right one always gets in; wrong ones wait
        await held_back(security.failures.failed(client, "form:" + attempt))
        return render(request, "login.html", {"error": "That is not the token.",
                                              "next": next_url}, 401)
    response = RedirectResponse(params.prefix(request) + next_url, 303)
    response.set_cookie(COOKIE, security.session, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=(params.prefix(request) or "/"),
                        max_age=SESSION_SECONDS)
    return response


async def logout(request: Request) -> Response:
    """End the session: its cookie is removed, then to the login form."""
    response = RedirectResponse(params.prefix(request) + "/login", 303)
    response.delete_cookie(COOKIE, path=(params.prefix(request) or "/"))
    return response

