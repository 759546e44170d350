"""The dashboard, served by the gateway at ``/ui``: overview, findings, spend, events and key management.

A Starlette sub-application (Jinja2 templates with autoescaping, Chart.js vendored under ``static/``, no build
step). Admin keys log in; the session is a signed HttpOnly, SameSite=Strict cookie (Secure over https) that
expires when idle; every POST form carries a CSRF token; responses forbid framing, caching and inline script
(Content-Security-Policy). Pages read the audit store through the :class:`~redline.store.base.AuditStore`
aggregates only: finding types, counts and keyed fingerprints, never values.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from redline.gateway.ui.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, SessionSigner
from redline.store.base import GroupBy, KeyRecord, UsageRow

if TYPE_CHECKING:
    from redline.gateway.app import Gateway

log = logging.getLogger("redline.gateway.ui")

HERE = Path(__file__).parent
ACTIONS = ("allow", "redact", "pseudonymize", "block", "reroute", "error", "denied")
# range -> (seconds, bucket seconds)
RANGES: dict[str, tuple[int, int]] = {
    "1h": (3600, 300), "24h": (86400, 3600), "7d": (7 * 86400, 6 * 3600), "30d": (30 * 86400, 86400),
}
DEFAULT_RANGE = "24h"
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569",
           "#ea580c")
OTHER_COLOR = "#94a3b8"
TOP_SERIES = 8
MAX_FORM_BYTES = 16 * 1024
LOGIN_FAILURES_PER_MINUTE = 10

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make browsers send "Origin: null"
    "cache-control": "no-store",
}


def _fmt_usd(v: float) -> str:
    if v and abs(v) < 0.01:
        return f"${v:.6f}".rstrip("0")
    return f"${v:,.4f}" if 0 < abs(v) < 1 else f"${v:,.2f}"


def _fmt_int(v: float) -> str:
    return f"{int(v):,}"


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


class Dashboard:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        cfg = gw.config.ui
        secret_env = cfg.session_secret_env
        secret = os.environ.get(secret_env, "") if secret_env else ""
        if secret_env and len(secret) < 32:
            log.warning("ui.session_secret_env: $%s is unset or shorter than 32 characters; using a random "
                        "secret (sessions end when the gateway restarts)", secret_env)
            secret = ""
        self.signer = SessionSigner(secret.encode() if secret else secrets.token_bytes(32),
                                    cfg.session_minutes * 60.0)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["usd"] = _fmt_usd
        self.env.filters["num"] = _fmt_int
        self.env.filters["ts"] = lambda d: f"{d:%Y-%m-%d %H:%M:%S}" if d else ""
        self._failures: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ plumbing

    def _secure(self, request: Request) -> bool:
        forced = self.gw.config.ui.secure_cookie
        return forced if forced is not None else request.url.scheme == "https"

    def _prefix(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("prefix", self._prefix(request))
        html = self.env.get_template(template).render(request=request, **ctx)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def _set_session(self, request: Request, resp: Response, cookie: str) -> None:
        resp.set_cookie(SESSION_COOKIE, cookie, max_age=int(self.signer.lifetime), path=self._prefix(request) or "/",
                        httponly=True, samesite="strict", secure=self._secure(request))

    async def _session(self, request: Request) -> tuple[Session, KeyRecord] | None:
        s = self.signer.load(request.cookies.get(SESSION_COOKIE))
        if s is None:
            return None
        rec = await asyncio.to_thread(self.gw.key_store.get, s.key_id)
        if rec is None or rec.revoked is not None or not rec.admin:
            return None
        return s, rec

    async def _form(self, request: Request) -> dict[str, str] | None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return None

    def _same_origin(self, request: Request) -> bool:
        """Defence in depth next to the CSRF token: a browser's Origin (when sent) must be this host."""
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1] == host

    def page(self, handler: Callable[[Request, Session, KeyRecord], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a page: log in first, check CSRF on POST, slide the session's expiry."""

        async def wrapped(request: Request) -> Response:
            found = await self._session(request)
            if found is None:
                nxt = request.url.path if request.method == "GET" else self._prefix(request) + "/"
                resp: Response = RedirectResponse(f"{self._prefix(request)}/login?{urlencode({'next': nxt})}",
                                                  status_code=303, headers=SECURITY_HEADERS)
                resp.delete_cookie(SESSION_COOKIE, path=self._prefix(request) or "/")
                return resp
            s, rec = found
            if request.method == "POST":
                form = await self._form(request)
                if form is None or not self.signer.check_csrf(s, form.get("csrf")) or not self._same_origin(request):
                    return self._render(request, "error.html", 403, message="The form expired or did not come "
                                        "from this dashboard (CSRF check failed). Reload the page and try again.",
                                        csrf="", admin=rec, nav="")
                request.state.form = form
            request.state.csrf = self.signer.csrf_token(s)
            resp = await handler(request, s, rec)
            fresh = self.signer.refresh(s)
            if fresh is not None:
                self._set_session(request, resp, fresh[0])
            return resp

        return wrapped

    def _range(self, request: Request) -> tuple[str, datetime, int, datetime]:
        name = request.query_params.get("range", DEFAULT_RANGE)
        if name not in RANGES:
            name = DEFAULT_RANGE
        seconds, bucket = RANGES[name]
        now = datetime.now(UTC)
        end = datetime.fromtimestamp((int(now.timestamp()) // bucket + 1) * bucket, UTC)
        since = end - timedelta(seconds=seconds)
        return name, since, bucket, end

    def _buckets(self, since: datetime, end: datetime, bucket: int) -> list[datetime]:
        out, t = [], since
        while t < end:
            out.append(t)
            t += timedelta(seconds=bucket)
        return out

    @staticmethod
    def _label(t: datetime, bucket: int) -> str:
        return f"{t:%m-%d}" if bucket >= 86400 else f"{t:%m-%d %H:%M}"

    def _series_chart(self, points: list[tuple[datetime, UsageRow]], since: datetime, end: datetime, bucket: int,
                      value: Callable[[UsageRow], float], kind: str = "line", stacked: bool = False,
                      unit: str = "") -> dict[str, Any]:
        """A Chart.js config: one dataset per group (the top groups by total, the rest as "other")."""
        buckets = self._buckets(since, end, bucket)
        index = {b: i for i, b in enumerate(buckets)}
        totals: dict[str, float] = {}
        for _, r in points:
            totals[r.group] = totals.get(r.group, 0.0) + value(r)
        top = [g for g, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))][:TOP_SERIES]
        series: dict[str, list[float]] = {g: [0.0] * len(buckets) for g in top}
        for b, r in points:
            i = index.get(b)
            if i is None:
                continue
            g = r.group if r.group in series else "other"
            series.setdefault(g, [0.0] * len(buckets))[i] += value(r)
        datasets = [{"label": g or "-", "data": [round(v, 6) for v in vals],
                     "borderColor": OTHER_COLOR if g == "other" else _color(n),
                     "backgroundColor": OTHER_COLOR if g == "other" else _color(n),
                     "fill": False, "tension": 0.25, "pointRadius": 2}
                    for n, (g, vals) in enumerate(series.items())]
        return {"type": kind, "unit": unit, "stacked": stacked,
                "data": {"labels": [self._label(b, bucket) for b in buckets], "datasets": datasets}}

    @staticmethod
    def _bar_chart(labels: list[str], values: list[float], label: str, *, kind: str = "bar",
                   unit: str = "", horizontal: bool = False) -> dict[str, Any]:
        colors = [_color(i) for i in range(len(labels))]
        return {"type": kind, "unit": unit, "horizontal": horizontal,
                "data": {"labels": labels, "datasets": [{"label": label, "data": values, "backgroundColor": colors,
                                                         "borderColor": colors if kind == "bar" else "#ffffff"}]}}

    # ------------------------------------------------------------------ login

    async def login(self, request: Request) -> Response:
        nxt = request.query_params.get("next", "")
        if request.method == "GET":
            if await self._session(request) is not None:
                return RedirectResponse(self._safe_next(request, nxt), status_code=303, headers=SECURITY_HEADERS)
            return self._login_page(request, nxt)
        form = await self._form(request) or {}
        nxt = form.get("next", "")
        cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie_token or not secrets.compare_digest(cookie_token, form.get("csrf", "")) \
                or not self._same_origin(request):
            return self._login_page(request, nxt, "The login form expired; please try again.", 403)
        ip = request.client.host if request.client else "-"
        now = time.monotonic()
        recent = [t for t in self._failures.get(ip, []) if now - t < 60]
        if len(recent) >= LOGIN_FAILURES_PER_MINUTE:
            return self._login_page(request, nxt, "Too many failed logins; wait a minute.", 429)
        rec = await asyncio.to_thread(self.gw.key_store.authenticate, form.get("key", "").strip())
        if rec is None or not rec.admin:
            recent.append(now)
            self._failures[ip] = recent
            if len(self._failures) > 10_000:
                self._failures.clear()
            msg = "That key is not an active admin key." if rec is not None else "Unknown or revoked key."
            return self._login_page(request, nxt, msg, 401)
        self._failures.pop(ip, None)
        cookie, _ = self.signer.issue(rec.key_id)
        resp = RedirectResponse(self._safe_next(request, nxt), status_code=303, headers=SECURITY_HEADERS)
        self._set_session(request, resp, cookie)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path=self._prefix(request) or "/")
        log.info("dashboard login by admin key %s (team %s)", rec.key_id, rec.team)
        return resp

    def _safe_next(self, request: Request, nxt: str) -> str:
        prefix = self._prefix(request)
        if nxt.startswith(prefix + "/") and not nxt.startswith("//") and "\\" not in nxt and "://" not in nxt:
            return nxt
        return prefix + "/"

    def _login_page(self, request: Request, nxt: str, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        resp = self._render(request, "login.html", status, csrf=token, next=nxt, error=error, admin=None, nav="")
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path=self._prefix(request) or "/", httponly=True,
                        samesite="strict", secure=self._secure(request))
        return resp

    async def logout(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        resp = RedirectResponse(f"{self._prefix(request)}/login", status_code=303, headers=SECURITY_HEADERS)
        resp.delete_cookie(SESSION_COOKIE, path=self._prefix(request) or "/")
        return resp

    # ------------------------------------------------------------------ pages

    async def overview(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        name, since, bucket, end = self._range(request)
        store = self.gw.audit_store

        def load() -> tuple[Any, ...]:
            return (store.timeseries(since, end, bucket_seconds=bucket), store.usage(since, "provider", until=end),
                    store.usage(since, "model", until=end), store.usage(since, "team", until=end))

        series, by_provider, by_model, by_team = await asyncio.to_thread(load)
        buckets = self._buckets(since, end, bucket)
        index = {b: i for i, b in enumerate(buckets)}
        lines = {k: [0] * len(buckets) for k in ("requests", "blocked", "redacted", "rerouted", "denied")}
        for b, r in series:
            i = index.get(b)
            if i is not None:
                for k in lines:
                    lines[k][i] += getattr(r, k)
        colors = {"requests": "#2563eb", "blocked": "#dc2626", "redacted": "#d97706", "rerouted": "#7c3aed",
                  "denied": "#475569"}
        activity = {"type": "line", "unit": "",
                    "data": {"labels": [self._label(b, bucket) for b in buckets],
                             "datasets": [{"label": k, "data": v, "borderColor": colors[k],
                                           "backgroundColor": colors[k], "fill": False, "tension": 0.25,
                                           "pointRadius": 2} for k, v in lines.items()]}}
        total = UsageRow("total", 0, 0, 0, 0, 0, 0, 0.0)
        for r in by_team:
            for k in ("requests", "blocked", "redacted", "rerouted", "denied", "errors", "prompt_tokens",
                      "completion_tokens"):
                setattr(total, k, getattr(total, k) + getattr(r, k))
            total.cost_usd += r.cost_usd

        def pie(rows: list[UsageRow], label: str) -> dict[str, Any]:
            rows = sorted(rows, key=lambda r: -r.requests)
            return self._bar_chart([r.group or "-" for r in rows], [r.requests for r in rows], label,
                                   kind="doughnut")

        charts = {"activity": activity, "provider": pie(by_provider, "requests"), "model": pie(by_model, "requests"),
                  "team": self._bar_chart([r.group for r in sorted(by_team, key=lambda r: -r.requests)],
                                          [r.requests for r in sorted(by_team, key=lambda r: -r.requests)],
                                          "requests", horizontal=True)}
        return self._render(request, "overview.html", admin=rec, csrf=request.state.csrf, nav="overview",
                            range=name, ranges=list(RANGES), total=total, charts=charts, by_team=by_team)

    async def findings(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        name, since, _, end = self._range(request)
        store = self.gw.audit_store

        def load() -> tuple[Any, ...]:
            return (store.findings(since, end), store.findings(since, end, by="team"),
                    store.findings(since, end, by="key"), store.fingerprints(since, end, limit=50))

        flat, by_team, by_key, fps = await asyncio.to_thread(load)
        kinds = {r.id: r.kind for r in self.gw.scanner.all_rules}
        chart = self._bar_chart([r.type for r in flat], [r.count for r in flat], "findings", horizontal=True)
        chart["data"]["datasets"][0]["backgroundColor"] = [
            {"secret": "#dc2626", "pii": "#d97706", "chat": "#7c3aed"}.get(kinds.get(r.type, ""), "#2563eb")
            for r in flat]
        teams = sorted({r.group for r in by_team})
        team_chart = {"type": "bar", "unit": "", "stacked": True, "data": {
            "labels": teams, "datasets": [
                {"label": t, "backgroundColor": _color(i), "borderColor": _color(i),
                 "data": [sum(r.count for r in by_team if r.group == g and r.type == t) for g in teams]}
                for i, t in enumerate([r.type for r in flat][:TOP_SERIES])]}}
        return self._render(request, "findings.html", admin=rec, csrf=request.state.csrf, nav="findings",
                            range=name, ranges=list(RANGES), flat=flat, by_team=by_team, by_key=by_key, fps=fps,
                            kinds=kinds, charts={"types": chart, "teams": team_chart})

    async def spend(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        name, since, bucket, end = self._range(request)
        by: GroupBy = request.query_params.get("by", "team")  # type: ignore[assignment]
        if by not in ("team", "model", "provider"):
            by = "team"
        store = self.gw.audit_store

        def load() -> tuple[Any, ...]:
            return (store.timeseries(since, end, bucket_seconds=bucket, by=by),
                    {g: store.usage(since, g, until=end) for g in ("team", "model", "provider")})

        series, tables = await asyncio.to_thread(load)
        rows = tables[by]
        charts = {
            "cost": self._series_chart(series, since, end, bucket, lambda r: r.cost_usd, kind="bar", stacked=True,
                                       unit="usd"),
            "tokens": self._series_chart(series, since, end, bucket, lambda r: r.prompt_tokens + r.completion_tokens,
                                         kind="line"),
            "efficiency": self._bar_chart([r.group for r in rows if r.requests],
                                          [round(r.cost_per_1k_requests, 4) for r in rows if r.requests],
                                          "USD per 1,000 requests", unit="usd", horizontal=True),
        }
        return self._render(request, "spend.html", admin=rec, csrf=request.state.csrf, nav="spend", range=name,
                            ranges=list(RANGES), by=by, tables=tables, charts=charts)

    async def events(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        q = request.query_params
        name, since, _, _ = self._range(request)
        filters = {k: (q.get(k) or "").strip()[:128] or None for k in ("team", "action", "provider", "model", "key")}
        if filters["action"] not in (None, *ACTIONS):
            filters["action"] = None
        try:
            limit = max(1, min(1000, int(q.get("limit", "100"))))
        except ValueError:
            limit = 100
        store = self.gw.audit_store

        def load() -> tuple[Any, ...]:
            evs = store.recent(since, limit=limit, team=filters["team"], action=filters["action"],
                               provider=filters["provider"], model=filters["model"], key_id=filters["key"])
            teams = [r.group for r in store.usage(since, "team")]
            providers = [r.group for r in store.usage(since, "provider")]
            models = [r.group for r in store.usage(since, "model")]
            return evs, sorted(teams), sorted(providers), sorted(models)

        evs, teams, providers, models = await asyncio.to_thread(load)
        return self._render(request, "events.html", admin=rec, csrf=request.state.csrf, nav="events", range=name,
                            ranges=list(RANGES), events=evs, filters=filters, limit=limit, actions=ACTIONS,
                            teams=teams, providers=providers, models=models)

    async def keys(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        created: tuple[KeyRecord, str] | None = None
        error = ""
        message = ""
        if request.method == "POST":
            form: dict[str, str] = request.state.form
            try:
                created = await asyncio.to_thread(self._create_key, form)
                log.info("dashboard: admin key %s created key %s (team %s)", rec.key_id, created[0].key_id,
                         created[0].team)
            except ValueError as exc:
                error = str(exc)
        return await self._keys_page(request, rec, created=created, error=error, message=message,
                                     status=400 if error else 200)

    async def revoke(self, request: Request, s: Session, rec: KeyRecord) -> Response:
        key_id = request.path_params["key_id"]
        if key_id == rec.key_id:
            return await self._keys_page(request, rec, error="You cannot revoke the key you are logged in with.",
                                         status=400)
        ok = await asyncio.to_thread(self.gw.key_store.revoke, key_id)
        self.gw._auth_cache.clear()
        if ok:
            log.info("dashboard: admin key %s revoked key %s", rec.key_id, key_id)
        return await self._keys_page(request, rec, message=f"Revoked {key_id}." if ok else "",
                                     error="" if ok else f"No active key {key_id}.", status=200 if ok else 404)

    def _create_key(self, form: dict[str, str]) -> tuple[KeyRecord, str]:
        def name(field: str, required: bool = False) -> str | None:
            v = form.get(field, "").strip()
            if not v:
                if required:
                    raise ValueError(f"{field} is required")
                return None
            if len(v) > 128 or not all(c.isalnum() or c in "-_.@:/+ " for c in v):
                raise ValueError(f"{field}: use 1-128 letters, digits, spaces or -_.@:/+")
            return v

        def number(field: str, kind: type[float] | type[int]) -> Any:
            v = form.get(field, "").strip()
            if not v:
                return None
            try:
                n = kind(v)
            except ValueError:
                raise ValueError(f"{field} must be a number") from None
            if n != n or n < 0:
                raise ValueError(f"{field} must be a number >= 0")
            return n

        team = name("team", required=True)
        assert team is not None
        models = [m.strip() for m in form.get("models", "").split(",") if m.strip()] or None
        return self.gw.key_store.create(team, user=name("user"), name=name("name"), admin=form.get("admin") == "on",
                                        budget_usd=number("budget_usd", float), rpm=number("rpm", int),
                                        models=models)

    async def _keys_page(self, request: Request, rec: KeyRecord, *, created: tuple[KeyRecord, str] | None = None,
                         error: str = "", message: str = "", status: int = 200) -> Response:
        from redline.gateway.limits import month_start

        show_all = request.query_params.get("all") == "1"
        store = self.gw.audit_store

        def load() -> tuple[list[KeyRecord], dict[str, UsageRow]]:
            keys = self.gw.key_store.list()
            usage = {r.group: r for r in store.usage(month_start(), "key")}
            return keys, usage

        keys, usage = await asyncio.to_thread(load)
        if not show_all:
            keys = [k for k in keys if k.revoked is None or (created and k.key_id == created[0].key_id)]
        keys.sort(key=lambda k: (k.revoked is not None, k.team, k.created))
        return self._render(request, "keys.html", status, admin=rec, csrf=request.state.csrf, nav="keys", keys=keys,
                            usage=usage, created=created, error=error, message=message, show_all=show_all)


def create_ui(gw: Gateway) -> Starlette:
    """The dashboard as an ASGI app to mount at ``/ui`` (see ``create_app``)."""
    d = Dashboard(gw)

    async def disabled(request: Request) -> Response:
        return HTMLResponse("The dashboard is disabled (ui.enabled: false).", status_code=404)

    if not gw.config.ui.enabled:
        return Starlette(routes=[Route("/{path:path}", disabled)])
    routes = [
        Route("/", d.page(d.overview), methods=["GET"]),
        Route("/login", d.login, methods=["GET", "POST"]),
        Route("/logout", d.page(d.logout), methods=["POST"]),
        Route("/findings", d.page(d.findings), methods=["GET"]),
        Route("/spend", d.page(d.spend), methods=["GET"]),
        Route("/events", d.page(d.events), methods=["GET"]),
        Route("/keys", d.page(d.keys), methods=["GET", "POST"]),
        Route("/keys/{key_id}/revoke", d.page(d.revoke), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def mount_ui(app: Starlette, gw: Gateway, path: str = "/ui") -> None:
    """Serve the dashboard under ``path`` of the gateway app (``/ui`` redirects to ``/ui/``)."""

    async def slash(request: Request) -> Response:
        return RedirectResponse(request.url.path + "/", status_code=307)

    app.add_route(path, slash, methods=["GET"])
    app.mount(path, create_ui(gw))
