"""Login and sessions: one access token (from the environment, or generated at start and printed
once), exchanged through the login form for a session cookie (HttpOnly, SameSite=Strict); each
session carries its own CSRF token for the forms. Sessions live in memory: a restart logs
everyone out, which is what a console whose token may have changed should do.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions", "console_token"]

COOKIE = "sigmaray_console"


def console_token(env_name: str) -> tuple[str, bool]:
    """(the login token, whether it was generated here): the variable `env_name` when set and not
    empty, else a fresh random one that the caller prints once."""
    value = os.environ.get(env_name, "").strip() if env_name else ""
    if value:
        return value, False
    return secrets.token_urlsafe(24), True


@dataclass(slots=True)
class Session:
    session_id: str
    csrf: str
    analyst: str
    expires_s: float  # time.monotonic() deadline


class Sessions:
    """The token check, the sessions, and a brake on guessing (per client address)."""

    def __init__(self, token: str, hours: float = 12.0, max_failures: int = 10, failure_window_s: float = 60.0) -> None:
        if len(token) < 8:
            raise ValueError("the console token must have at least 8 characters")
        self._token = token.encode()
        self.lifetime_s = hours * 3600
        self.max_failures = max_failures
        self.failure_window_s = failure_window_s
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        """Too many wrong tokens from this address lately: refuse without checking."""
        with self._lock:
            failures = self._failures.get(client)
            if not failures:
                return False
            cutoff = time.monotonic() - self.failure_window_s
            while failures and failures[0] < cutoff:
                failures.popleft()
            return len(failures) >= self.max_failures

    def login(self, client: str, token: str, analyst: str) -> Session | None:
        """A new session for the right token (compared in constant time), else None (counted)."""
        if not hmac.compare_digest(token.encode(), self._token):
            with self._lock:
                self._failures.setdefault(client, deque(maxlen=self.max_failures * 2)).append(time.monotonic())
                if len(self._failures) > 10_000:
                    self._failures.clear()
            return None
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), analyst.strip()[:100],
                          time.monotonic() + self.lifetime_s)
        with self._lock:
            now = time.monotonic()
            for key in [key for key, known in self._sessions.items() if known.expires_s < now]:
                del self._sessions[key]
            self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expires_s < time.monotonic():
                self._sessions.pop(session_id, None)
                return None
            return session

    def logout(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())
