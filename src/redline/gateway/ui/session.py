"""Signed, expiring session cookies and CSRF tokens for the dashboard (HMAC-SHA256, no server-side state).

A session names the admin key that logged in; every request re-checks that the key still exists, is an admin
key and is not revoked, so revoking the key ends its sessions. The CSRF token of a session is an HMAC of the
session id, sent in a hidden field of every POST form and compared in constant time. Before login (no
session yet), the login form uses a double-submit token: a random cookie that the form must echo.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "redline_session"
LOGIN_CSRF_COOKIE = "redline_login_csrf"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    sid: str  # random id of this login
    key_id: str  # the admin key that logged in
    expires: float  # unix time


class SessionSigner:
    def __init__(self, secret: bytes, lifetime_seconds: float) -> None:
        if len(secret) < 32:
            raise ValueError("the session secret must be at least 32 bytes")
        self._secret = secret
        self.lifetime = lifetime_seconds

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._secret, purpose + b"\0" + payload, hashlib.sha256).digest()

    def issue(self, key_id: str) -> tuple[str, Session]:
        s = Session(sid=secrets.token_urlsafe(18), key_id=key_id, expires=time.time() + self.lifetime)
        return self.dump(s), s

    def dump(self, s: Session) -> str:
        payload = json.dumps({"s": s.sid, "k": s.key_id, "e": int(s.expires)}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def load(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1024:
            return None
        body, mac = cookie.split(".")
        try:
            payload = _unb64(body)
            if not hmac.compare_digest(_unb64(mac), self._mac(b"session", payload)):
                return None
            d = json.loads(payload)
            s = Session(sid=str(d["s"]), key_id=str(d["k"]), expires=float(d["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return s if s.expires > time.time() else None

    def refresh(self, s: Session) -> tuple[str, Session] | None:
        """Sliding expiry: a new cookie when more than a tenth of the lifetime has passed, else None."""
        if s.expires - time.time() > self.lifetime * 0.9:
            return None
        s2 = Session(sid=s.sid, key_id=s.key_id, expires=time.time() + self.lifetime)
        return self.dump(s2), s2

    def csrf_token(self, s: Session) -> str:
        return _b64(self._mac(b"csrf", s.sid.encode()))

    def check_csrf(self, s: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(s))
