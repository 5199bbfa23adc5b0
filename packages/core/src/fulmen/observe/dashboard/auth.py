"""The dashboard's access rules: the gateway's bearer token, and a Host check on loopback.

**Token** (``--auth-token``, default ``$FULMEN_AUTH_TOKEN``, as ``fulmen gateway``): when set,
every route but ``/healthz`` needs ``Authorization: Bearer <token>``, exactly as the gateway
checks it. A browser cannot add that header to a page load, so it may instead open the URL
that ``fulmen dashboard`` prints once, ``/?token=<token>``: the token is checked, stored in an
``HttpOnly``, ``SameSite=Strict`` cookie for this port, and the browser is redirected to the
same page without it (it does not stay in the address bar or the history). Requests then carry
the cookie. Tokens are compared in constant time.

**Host** (loopback binds only): a request whose ``Host`` header is not the loopback address
and port the dashboard listens on is refused (403), so a web page the browser opens elsewhere
cannot reach the dashboard through DNS rebinding.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

__all__ = ["LOOPBACK", "AccessRules", "loopback_hosts"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Addresses that count as loopback for ``--host``."""


def loopback_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` header values to accept when bound to ``host:port`` (None: any).

    Loopback binds accept ``127.0.0.1``, ``localhost`` and ``[::1]`` at ``port``; other binds
    accept every host name (the machine's names are not known here).
    """
    if host not in LOOPBACK:
        return None
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


class AccessRules:
    """Decides whether a request may be served (see the module docstring). Thread-safe.

    Args:
        token: The bearer token (None: no token needed).
        cookie: Name of the cookie that carries the token in a browser.
        hosts: Accepted ``Host`` headers (None: any).
    """

    def __init__(self, token: str | None, *, cookie: str, hosts: Iterable[str] | None) -> None:
        if token is not None and not token:
            raise ValueError("auth_token: expected a non-empty string or None")
        self._token = token.encode() if token else None
        self._bearer = f"Bearer {token}".encode() if token else None
        self.cookie = cookie
        self._hosts = frozenset(hosts) if hosts is not None else None

    @property
    def needs_token(self) -> bool:
        """True when a token is set."""
        return self._token is not None

    def host_allowed(self, request: web.Request) -> bool:
        """True when the request's ``Host`` header is accepted."""
        return self._hosts is None or request.host in self._hosts

    def authorised(self, request: web.Request) -> bool:
        """True when no token is set, or the request carries it (header or cookie)."""
        if self._token is None or self._bearer is None:
            return True
        header = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(header, self._bearer):
            return True
        cookie = request.cookies.get(self.cookie, "").encode()
        return hmac.compare_digest(cookie, self._token)

    def login(self, request: web.Request) -> web.StreamResponse | None:
        """For ``GET ...?token=<the token>``: a redirect to the same URL without the token that
        sets the cookie; None for any other request (including a wrong token)."""
        given = request.query.get("token")
        if self._token is None or request.method != "GET" or given is None:
            return None
        if not hmac.compare_digest(given.encode(), self._token):
            return None
        query = {k: v for k, v in request.query.items() if k != "token"}
        response = web.Response(status=303, headers={"Location": str(request.rel_url.with_query(query))})
        response.set_cookie(
            self.cookie,
            self._token.decode(),
            httponly=True,
            samesite="Strict",
            path="/",
        )
        return response
