"""Dashboard security over plain HTTP: login required, cookie flags, CSRF, same-origin, revocation ends sessions."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.conftest import Env

PAGES = ("/ui/", "/ui/findings", "/ui/spend", "/ui/events", "/ui/keys")


@pytest.fixture()
def http(env: Env) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{env.server.port}", follow_redirects=False) as c:
        yield c


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m
    return m.group(1)


def _login(http: httpx.Client, key: str) -> httpx.Response:
    token = _csrf(http.get("/ui/login").text)
    return http.post("/ui/login", data={"csrf": token, "key": key, "next": "/ui/events"})


def test_nothing_visible_without_login(http: httpx.Client) -> None:
    assert http.get("/ui").status_code == 307
    for page in PAGES:
        r = http.get(page)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), page
    r = http.post("/ui/keys", data={"team": "x"})
    assert r.status_code == 303
    r = http.get("/ui/login")
    assert r.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "unsafe-inline" not in r.headers["content-security-policy"]


def test_login_cookie_flags_and_redirect(env: Env, http: httpx.Client) -> None:
    r = _login(http, env.admin_key)
    assert r.status_code == 303 and r.headers["location"] == "/ui/events"
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("redline_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert env.admin_key not in cookie
    assert http.get("/ui/keys").status_code == 200


def test_non_admin_and_wrong_keys_are_refused(env: Env, http: httpx.Client) -> None:
    assert _login(http, env.key).status_code == 401
    assert _login(http, "rl-" + "y" * 40).status_code == 401
    assert "redline_session" not in http.cookies


def test_login_needs_its_csrf_token_and_same_origin(env: Env, http: httpx.Client) -> None:
    http.get("/ui/login")
    assert http.post("/ui/login", data={"csrf": "forged", "key": env.admin_key}).status_code == 403
    token = _csrf(http.get("/ui/login").text)
    r = http.post("/ui/login", data={"csrf": token, "key": env.admin_key},
                  headers={"origin": "https://evil.example"})
    assert r.status_code == 403


def test_open_redirect_is_not_possible(env: Env, http: httpx.Client) -> None:
    token = _csrf(http.get("/ui/login").text)
    r = http.post("/ui/login", data={"csrf": token, "key": env.admin_key, "next": "//evil.example/ui/"})
    assert r.headers["location"] == "/ui/"


def test_post_forms_need_the_session_csrf_token(env: Env, http: httpx.Client) -> None:
    _login(http, env.admin_key)
    before = len(env.keys.list())
    assert http.post("/ui/keys", data={"team": "forged"}).status_code == 403
    assert http.post("/ui/keys", data={"team": "forged", "csrf": "x" * 43}).status_code == 403
    assert len(env.keys.list()) == before
    token = _csrf(http.get("/ui/keys").text)
    r = http.post("/ui/keys", data={"team": "made-here", "csrf": token})
    assert r.status_code == 200 and "rl-" in r.text
    r = http.post("/ui/keys", data={"team": "bad<script>", "csrf": token})
    assert r.status_code == 400 and "<script>" not in r.text


def test_revoking_the_admin_key_ends_its_sessions(env: Env, http: httpx.Client) -> None:
    rec, secret = env.keys.create("ops", admin=True, name="temporary-admin")
    _login(http, secret)
    assert http.get("/ui/").status_code == 200
    env.keys.revoke(rec.key_id)
    assert http.get("/ui/").status_code == 303
    token = _csrf(http.get("/ui/login").text)
    assert token  # a fresh login form, not the dashboard


def test_logout(env: Env, http: httpx.Client) -> None:
    _login(http, env.admin_key)
    token = _csrf(http.get("/ui/").text)
    r = http.post("/ui/logout", data={"csrf": token})
    assert r.status_code == 303
    assert http.get("/ui/").status_code == 303
