"""Passwords out of every URL SHIM shows (no dependency: settings, errors and the CLI use it)."""

from __future__ import annotations

from urllib.parse import unquote

#: URL query parameters whose value is a secret.
SECRET_PARAMETERS = frozenset({"password", "sentinel_password"})


def mask_url(url: str) -> str:
    """``url`` with any password (in the authority or a ``password=`` query) replaced by ``***``.

    Works on the raw text, so a password holding '#', '/', '?' or '@' is hidden whole."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, location = rest.rpartition("@")
    head = ""
    if at:
        user, colon, _password = userinfo.partition(":")
        head = f"{user}:***@" if colon else f"{userinfo}@"
    path, question, query = location.partition("?")
    if question:
        items = []
        for item in query.split("&"):
            name, eq, _value = item.partition("=")
            items.append(f"{name}=***" if eq and unquote(name) in SECRET_PARAMETERS else item)
        query = "&".join(items)
    return f"{scheme}://{head}{path}{question}{query}"
