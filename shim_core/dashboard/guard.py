"""Who may use the dashboard: an ASGI middleware in front of every route.

* Bound to loopback without a token: only requests addressed to a loopback name pass (the
  ``Host`` header), so a web page cannot reach the dashboard through DNS rebinding.
* With a token (``SHIM_DASHBOARD_TOKEN``, at least 16 characters; required on any other
  address): every request carries it, as ``Authorization: Bearer <token>``, or the HttpOnly,
  same-site cookie that opening the page once with ``?token=<token>`` sets. The cookie holds an
  HMAC of the token, not the token; it is named after the dashboard's port (two dashboards on one
  host keep theirs apart) and is ``Secure`` when the page came over https.
* No request from another site: a browser's ``Sec-Fetch-Site: cross-site`` or ``same-site``, or
  an ``Origin`` that is not the dashboard's, is refused, except a plain navigation to the page
  itself (a link to the dashboard opens it; the page's data still needs same-origin requests).
  Every response says ``Cross-Origin-Resource-Policy: same-origin``.
* Every action is a POST with the ``X-Shim-Action`` header, which a page of another origin
  cannot send (a browser asks first, and the dashboard never says yes).
* Every response forbids scripts, frames and connections from anywhere but the dashboard itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shim_core.errors import ConfigError

#: The environment variable holding the dashboard's token.
TOKEN_ENV = "SHIM_DASHBOARD_TOKEN"
#: The shortest token accepted (as for SHIM_SECRET's keys).
MIN_TOKEN_LENGTH = 16
#: The header every action must carry.
ACTION_HEADER = "x-shim-action"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_OTHER_SITES = ("cross-site", "same-site")


def check_token(token: str | None) -> None:
    """Refuse (ConfigError) a token shorter than :data:`MIN_TOKEN_LENGTH` (never shown)."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_ENV} must have at least {MIN_TOKEN_LENGTH} characters "
            "(`openssl rand -hex 16` makes a good one)"
        )


def cookie_name(port: int | None) -> str:
    """The cookie of the dashboard serving on ``port``."""
    return f"shim_dashboard_{port}" if port else "shim_dashboard"


def cookie_value(token: str) -> str:
    """What the cookie holds: an HMAC of the token (a stolen cookie does not give the token)."""
    return hmac.new(token.encode(), b"shim dashboard session", hashlib.sha256).hexdigest()


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
        check_token(token)
        self.app = app
        self.token = token
        self._cookie = cookie_value(token) if token is not None else ""

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
        site = headers.get("sec-fetch-site", "")
        if site in _OTHER_SITES and not _navigation(scope, headers):
            return _refuse(403, f"forbidden: a request from another site ({site})")
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return _refuse(403, f"forbidden: a request from another origin ({origin[:100]})")
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if scope["method"] == "GET" and scope["path"] == "/" and "token" in query:
                return self._login(scope, query)
            if not self._authorised(scope, headers):
                return _refuse(401, f"unauthorized: give the dashboard token ({TOKEN_ENV})")
        if scope["method"] not in ("GET", "HEAD") and headers.get(ACTION_HEADER) != "1":
            return _refuse(403, "forbidden: an action needs the X-Shim-Action header")
        return None

    def _authorised(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(given.encode(), self.token.encode())
        cookie = cookie_parser(headers.get("cookie", "")).get(cookie_name(_port(scope)), "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._cookie.encode())

    def _login(self, scope: Scope, query: dict[str, str]) -> Response:
        """``/?token=...``: a right token becomes a cookie, and the page is opened without it in
        the address (nor in the history)."""
        assert self.token is not None
        if not hmac.compare_digest(query.pop("token").encode(), self.token.encode()):
            return _refuse(401, "unauthorized: wrong dashboard token")
        rest = urlencode(query)
        response = RedirectResponse("/" + (f"?{rest}" if rest else ""), status_code=303)
        response.set_cookie(
            cookie_name(_port(scope)),
            self._cookie,
            httponly=True,
            samesite="strict",
            secure=scope.get("scheme") == "https",
            path="/",
        )
        return response


def _navigation(scope: Scope, headers: dict[str, str]) -> bool:
    """Whether the request opens the page itself in a tab (a link followed from elsewhere)."""
    return (
        scope["method"] == "GET"
        and scope["path"] == "/"
        and headers.get("sec-fetch-mode") == "navigate"
        and headers.get("sec-fetch-dest") == "document"
    )


def _port(scope: Scope) -> int | None:
    server = scope.get("server")
    return int(server[1]) if server and server[1] is not None else None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _hostname(netloc: str) -> str:
    """The host of a ``Host`` header or an origin's netloc, without the port."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _refuse(status: int, line: str) -> Response:
    return PlainTextResponse(line + "\n", status_code=status, headers=SECURITY_HEADERS)
