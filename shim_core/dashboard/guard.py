"""Who may use the dashboard: an ASGI middleware in front of every route.

* Bound to loopback without a token: only requests addressed to a loopback name pass (the
  ``Host`` header), so a web page cannot reach the dashboard through DNS rebinding.
* With a token (``SHIM_DASHBOARD_TOKEN``; required on any other address): every request carries
  it, as ``Authorization: Bearer <token>`` or in the HttpOnly, same-site cookie that opening the
  page once with ``?token=<token>`` sets.
* Every action is a POST with the ``X-Shim-Action`` header, which a page of another origin
  cannot send (a browser asks first, and the dashboard never says yes), and from no other origin.
* Every response forbids scripts, frames and connections from anywhere but the dashboard itself.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The cookie that carries the token after the first page load.
COOKIE = "shim_dashboard_token"
#: The header every action must carry.
ACTION_HEADER = "x-shim-action"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """The middleware: ``token`` None means loopback-only access without one."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, secured)

    def _refusal(self, scope: Scope) -> Response | None:
        """The response that turns the request away, or None to let it through."""
        headers = _headers(scope)
        host = headers.get("host", "")
        if self.token is None and not is_loopback(_hostname(host)):
            return _refuse(421, f"this dashboard answers on loopback addresses only, not {host}")
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if scope["method"] == "GET" and scope["path"] == "/" and "token" in query:
                return self._login(query)
            if not self._authorised(headers):
                return _refuse(401, "unauthorized: give the dashboard token (SHIM_DASHBOARD_TOKEN)")
        if scope["method"] not in ("GET", "HEAD"):
            if headers.get(ACTION_HEADER) != "1":
                return _refuse(403, "forbidden: an action needs the X-Shim-Action header")
            origin = headers.get("origin")
            if origin and urlsplit(origin).netloc.lower() != host.lower():
                return _refuse(403, f"forbidden: an action from another origin ({origin})")
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            cookies: SimpleCookie = SimpleCookie()
            cookies.load(headers.get("cookie", ""))
            given = cookies[COOKIE].value if COOKIE in cookies else ""
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def _login(self, query: dict[str, str]) -> Response:
        """``/?token=...``: a right token becomes a cookie, and the page is opened without it in
        the address (nor in the history)."""
        assert self.token is not None
        if not hmac.compare_digest(query.pop("token").encode(), self.token.encode()):
            return _refuse(401, "unauthorized: wrong dashboard token")
        rest = urlencode(query)
        response = RedirectResponse("/" + (f"?{rest}" if rest else ""), status_code=303)
        response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
        return response


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _hostname(netloc: str) -> str:
    """The host of a ``Host`` header or an origin's netloc, without the port."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _refuse(status: int, line: str) -> Response:
    return PlainTextResponse(line + "\n", status_code=status, headers=SECURITY_HEADERS)
