"""The gateway application: OpenAI-compatible endpoints that inspect, decide, rewrite, forward and audit.

``create_app(config)`` returns a Starlette app. Per request: authenticate the virtual key, read the body
(size limit), check model, provider ban, budgets and rate limits, extract every upstream-visible text, scan it
in-process, evaluate the policy (block / reroute / pseudonymise / redact / allow), rewrite the body, forward
it with the provider's key over a pooled connection, apply the response policy and restore placeholders
(streamed or not), and submit an audit event to the background writer. Any failure in inspection or policy
evaluation refuses the request (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from yarl import URL

from redline.engine import Finding, Scanner
from redline.gateway.config import ConfigError, GatewayConfig, ProviderConfig, RedactWith, load_config
from redline.gateway.inspect import (
    SEP,
    InspectError,
    dumps,
    loads,
    replace_spans,
    request_segments,
    scan_segments,
    set_path,
)
from redline.gateway.metrics import Metrics
from redline.gateway.policy import Decision, PolicyEngine
from redline.gateway.streaming import (
    ResponseBlocked,
    ResponseFilter,
    SSEParser,
    StreamState,
    process_response_body,
    sse_error,
    sse_event,
)
from redline.redact import Policy, Redactor, Vault
from redline.redact.policy import Rule
from redline.store.base import Action, AuditEvent, AuditStore, KeyRecord, KeyStore

log = logging.getLogger("redline.gateway")

CONFIG_ENV = "REDLINE_GATEWAY_CONFIG"
_JSON = "application/json"
_ENDPOINTS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


_dumps = dumps
_loads = loads


def error_response(status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type, "param": None, "code": code}}
    return Response(_dumps(body), status_code=status, media_type=_JSON, headers=headers)


@dataclass
class _Ctx:
    """What one request accumulates for its audit event and metrics."""

    rid: str
    endpoint: str
    t0: float
    key: KeyRecord | None = None
    provider: str = ""
    model: str = ""
    action: Action = "allow"
    status: int = 200
    stream: bool = False
    findings: list[Finding] = field(default_factory=list)
    response_findings: list[Finding] = field(default_factory=list)
    upstream_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    rerouted_from: str | None = None
    error: str | None = None
    redacted_prompt: str | None = None
    done: bool = False


class _UpstreamError(Exception):
    def __init__(self, response: Response, kind: str, message: str) -> None:
        super().__init__(message)
        self.response = response
        self.kind = kind


class Gateway:
    def __init__(self, config: GatewayConfig, *, key_store: KeyStore | None = None,
                 audit_store: AuditStore | None = None, scanner: Scanner | None = None) -> None:
        from redline.gateway.limits import Limiter
        from redline.gateway.prices import load_prices
        from redline.store import open_audit_store, open_key_store
        from redline.store.writer import AuditWriter

        self.config = config
        det = config.detection
        self.scanner = scanner or Scanner(extra_rule_paths=det.rules, disabled=det.disable, enabled=det.enable,
                                          backend=det.backend)
        config.check_types(r.id for r in self.scanner.all_rules)
        self.engine = PolicyEngine(config)
        # Answers are scanned only for the kinds a response rule acts on (by default secrets, to redact a key
        # a model echoes): scanning them for personal data the policy allows would cost time on every answer.
        kinds = self.engine.response_kinds({r.id: r.kind for r in self.scanner.all_rules})
        active = list(self.scanner.rules)
        self.response_scanner = self.scanner
        if kinds and not kinds >= {r.kind for r in active}:
            self.response_scanner = Scanner(active, enabled={r.id for r in active if not r.enabled}, kinds=kinds,
                                            backend=det.backend)
            self.response_scanner.fingerprint = self.scanner.fingerprint
        self._own_stores: list[KeyStore | AuditStore] = []
        if key_store is None:
            key_store = open_key_store(config.store.keys)
            self._own_stores.append(key_store)
        if audit_store is None:
            audit_store = open_audit_store(config.store.audit, allow_insecure=config.store.allow_insecure)
            self._own_stores.append(audit_store)
        self.key_store: KeyStore = key_store
        self.audit_store: AuditStore = audit_store
        self.writer = AuditWriter(audit_store, batch_size=config.audit.batch_size,
                                  flush_interval=config.audit.flush_seconds)
        self.limiter = Limiter(audit_store, team_rpm=config.limits.team_rpm,
                               team_budget_usd=config.limits.team_budget_usd,
                               default_key_rpm=config.limits.default_key_rpm)
        self.prices = load_prices(config.prices)
        ops = {a.redact for layer in (config.policy.default, *config.policy.providers.values(),
                                      *config.policy.models.values())
               for side in (layer.request, layer.response) for a in side.values() if isinstance(a, RedactWith)}
        # The redaction module's operators; a hash operator resolves its key now (fails at startup, not later).
        self.redactor = Redactor(Policy(kinds={"secret": Rule("hash" if "hash" in ops else "mask"),
                                               "pii": Rule("mask"), "chat": Rule("mask")}))
        self.metrics = Metrics()
        self.clients: dict[str, aiohttp.ClientSession] = {}
        self.upstream_headers: dict[str, dict[str, str]] = {}
        self.upstream_urls: dict[tuple[str, str], URL] = {}
        self._auth_cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._models = {m.name: m for m in config.models}
        self._providers = {p.name: p for p in config.providers}

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        for p in self.config.providers:
            self.clients[p.name] = _make_client(p)
            for endpoint, path in _ENDPOINTS.items():
                self.upstream_urls[p.name, endpoint] = URL(p.base_url.rstrip("/") + path)
            headers = {"content-type": _JSON, **p.headers}
            key = p.api_key()
            if key:
                headers["authorization"] = f"Bearer {key}"
            elif p.api_key_env:
                log.warning("provider %s: environment variable %s is not set; requests go without a key",
                            p.name, p.api_key_env)
            self.upstream_headers[p.name] = headers
        self.writer.start()

    async def shutdown(self) -> None:
        try:
            await self.writer.aclose()  # flush every audit event (uvicorn runs this on SIGTERM)
        finally:
            for c in self.clients.values():
                with contextlib.suppress(Exception):
                    await c.close()
            for s in self._own_stores:
                with contextlib.suppress(Exception):
                    s.close()

    # ------------------------------------------------------------------ identity

    def authenticate(self, request: Request) -> KeyRecord | None:
        auth = request.headers.get("authorization", "")
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            secret = request.headers.get("api-key", "")
            if not secret:
                return None
        secret = secret.strip()
        now = time.monotonic()
        hit = self._auth_cache.get(secret)
        if hit is not None and hit[1] > now:
            return hit[0]
        rec = self.key_store.authenticate(secret)
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        ttl = self.config.auth.cache_seconds if rec is not None else min(1.0, self.config.auth.cache_seconds)
        self._auth_cache[secret] = (rec, now + ttl)
        return rec

    # ------------------------------------------------------------------ audit

    def finish(self, ctx: _Ctx) -> None:
        if ctx.done:
            return
        ctx.done = True
        latency = time.perf_counter() - ctx.t0
        counts: dict[str, int] = {}
        kinds: dict[str, int] = {}
        fps: list[str] = []
        for f in (*ctx.findings, *ctx.response_findings):
            counts[f.type] = counts.get(f.type, 0) + 1
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
            if f.fingerprint not in fps:
                fps.append(f.fingerprint)
        cost = 0.0
        if ctx.prompt_tokens or ctx.completion_tokens:
            cost = self.prices.cost_usd(ctx.model, ctx.prompt_tokens, ctx.completion_tokens,
                                        cached_tokens=ctx.cached_tokens)
            self.limiter.record_spend(ctx.key, cost)
            m = self.metrics
            m.child(m.tokens, ctx.provider, ctx.model, "prompt").inc(ctx.prompt_tokens)
            m.child(m.tokens, ctx.provider, ctx.model, "completion").inc(ctx.completion_tokens)
            if cost:
                m.child(m.cost, ctx.provider, ctx.model).inc(cost)
        key = ctx.key
        event = AuditEvent(
            ts=datetime.now(UTC), request_id=ctx.rid, key_id=key.key_id if key else None,
            team=key.team if key else None, user=key.user if key else None, provider=ctx.provider,
            model=ctx.model, endpoint=ctx.endpoint, action=ctx.action, status=ctx.status, stream=ctx.stream,
            finding_counts=counts, finding_kinds=kinds, fingerprints=fps, latency_ms=latency * 1000,
            upstream_ms=ctx.upstream_ms, prompt_tokens=ctx.prompt_tokens, completion_tokens=ctx.completion_tokens,
            cost_usd=cost, rerouted_from=ctx.rerouted_from, error=ctx.error, redacted_prompt=ctx.redacted_prompt)
        if not self.writer.submit(event):
            self.metrics.audit_dropped.inc()
        m = self.metrics
        m.child(m.requests, ctx.endpoint, ctx.provider or "-", ctx.action, str(ctx.status)).inc()
        m.child(m.latency, ctx.endpoint).observe(latency)
        if ctx.upstream_ms is not None:
            m.child(m.overhead, ctx.endpoint).observe(max(0.0, latency - ctx.upstream_ms / 1000))
        for side, found in (("request", ctx.findings), ("response", ctx.response_findings)):
            for f in found:
                m.child(m.findings, side, f.kind, f.type).inc()

    def refuse(self, ctx: _Ctx, status: int, message: str, type: str = "invalid_request_error",
               code: str | None = None, action: Action = "denied", headers: dict[str, str] | None = None) -> Response:
        ctx.status = status
        ctx.action = action
        ctx.error = message[:500]
        self.finish(ctx)
        resp = error_response(status, message, type, code, headers)
        resp.headers["x-request-id"] = ctx.rid
        return resp

    # ------------------------------------------------------------------ the proxy

    async def _read_body(self, request: Request) -> bytes | None:
        limit = self.config.limits.max_body_bytes
        cl = request.headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def proxy(self, request: Request, endpoint: str) -> Response:
        ctx = _Ctx(rid="req_" + secrets.token_hex(12), endpoint=endpoint, t0=time.perf_counter())
        self.metrics.in_flight.inc()
        try:
            return await self._proxy(request, ctx)
        except Exception:  # a bug of ours: refuse, never forward raw
            log.exception("request %s failed inside the gateway", ctx.rid)
            return self.refuse(ctx, 500, "The gateway failed to process this request; it was not forwarded.",
                               "server_error", "gateway_error", action="error")
        finally:
            self.metrics.in_flight.dec()

    async def _proxy(self, request: Request, ctx: _Ctx) -> Response:
        key = self.authenticate(request)
        if key is None:
            return self.refuse(ctx, 401, "Missing or invalid API key: use a redline virtual key "
                               "(Authorization: Bearer rl-…).", "invalid_request_error", "invalid_api_key")
        ctx.key = key
        raw = await self._read_body(request)
        if raw is None:
            return self.refuse(ctx, 413, f"Request body larger than {self.config.limits.max_body_bytes} bytes.",
                               "invalid_request_error", "request_too_large")
        try:
            body = _loads(raw)
        except (ValueError, UnicodeDecodeError):
            return self.refuse(ctx, 400, "The request body is not valid JSON.", "invalid_request_error",
                               "invalid_json")
        if not isinstance(body, dict):
            return self.refuse(ctx, 400, "The request body must be a JSON object.", "invalid_request_error",
                               "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.refuse(ctx, 400, "`model` is required.", "invalid_request_error", "missing_model")
        ctx.model = model[:200]
        mcfg = self._models.get(model)
        if mcfg is None:
            return self.refuse(ctx, 404, f"The model {model[:100]!r} does not exist or is not served by this "
                               "gateway.", "invalid_request_error", "model_not_found")
        provider = self._providers[mcfg.provider]
        ctx.provider = provider.name
        if not provider.enabled:
            return self.refuse(ctx, 403, f"Provider {provider.name!r} is disabled by your organisation's "
                               "policy.", "permission_denied", "provider_disabled")
        verdict = await self.limiter.check(key, model)
        if not verdict.allowed:
            err = verdict.error_body()["error"]
            return self.refuse(ctx, verdict.status, err["message"], err["type"], err["code"],
                               headers=verdict.headers())
        stream = bool(body.get("stream")) and ctx.endpoint != "embeddings"
        ctx.stream = stream

        # Inspect and decide. Anything failing here refuses the request (fail closed).
        try:
            segments = request_segments(body)
            found = scan_segments(self.scanner, [s.text for s in segments])
            decision = self.engine.evaluate(provider.name, model, [f for _, f in found])
        except InspectError as exc:
            return self.refuse(ctx, 400, str(exc), "invalid_request_error", "uninspectable_input")
        except Exception:
            log.exception("request %s: inspection failed", ctx.rid)
            return self.refuse(ctx, 500, "Inspection of the request failed; it was not forwarded.",
                               "server_error", "inspection_failed", action="error")
        ctx.findings = [f for (_, f), a in zip(found, decision.actions, strict=True) if self.engine.counts(f)]
        if self.config.audit.store_redacted_prompt:
            ctx.redacted_prompt = _audit_prompt([s.text for s in segments], found)
        if decision.action == "block":
            reason = decision.reason or "the request contains data that may not be sent to this model"
            types = ", ".join(decision.blocked_types)
            return self.refuse(ctx, 400, f"Blocked by redline policy: {reason} (found: {types}).",
                               "invalid_request_error", "blocked_by_policy", action="block")
        ctx.action = decision.action
        vault = self._rewrite(body, segments, found, decision)
        if decision.rerouted_from:
            ctx.rerouted_from = decision.rerouted_from
        target = self._providers[decision.provider]
        ctx.provider = target.name
        upstream_model = decision.upstream_model or mcfg.upstream_name
        body["model"] = upstream_model
        ctx.model = upstream_model
        strip_usage = False
        if stream and target.stream_usage:
            opts = body.get("stream_options")
            if not (isinstance(opts, dict) and opts.get("include_usage")):
                body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
                strip_usage = True
        filt = None
        if self.engine.response_scanning(target.name, model) and ctx.endpoint != "embeddings":
            filt = ResponseFilter(self.response_scanner, self.engine, self.redactor, target.name, model)
        payload = _dumps(body)
        url = self.upstream_urls[target.name, ctx.endpoint]
        if stream:
            return await self._stream(ctx, target, url, payload, StreamState(
                filt, vault, strip_usage, chat=ctx.endpoint == "chat.completions"))
        return await self._unary(ctx, target, url, payload, filt, vault)

    def _rewrite(self, body: dict[str, Any], segments: list[Any], found: list[tuple[int, Finding]],
                 decision: Decision) -> Vault | None:
        vault: Vault | None = None
        by_seg: dict[int, list[tuple[int, int, str]]] = {}
        for (i, f), a in zip(found, decision.actions, strict=True):
            if a.action == "pseudonymize":
                if vault is None:
                    vault = Vault()
                rep = vault.placeholder(segments[i].text[f.start:f.end], f.type)
            elif a.action == "redact":
                rep = self.redactor.replacement(segments[i].text, f.start, f.end, f,
                                                a.operator or "mask", None)  # type: ignore[arg-type]
            else:
                continue
            by_seg.setdefault(i, []).append((f.start, f.end, rep))
        for i, spans in by_seg.items():
            set_path(body, segments[i].path, replace_spans(segments[i].text, spans))
        return vault

    # ------------------------------------------------------------------ upstream calls

    def _upstream_failure(self, ctx: _Ctx, provider: ProviderConfig, exc: Exception) -> Response:
        if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
            kind, status, msg, code = "timeout", 504, f"Upstream {provider.name} timed out.", "upstream_timeout"
        else:
            kind, status, msg, code = ("connection", 502, f"Upstream {provider.name} is unreachable or closed the "
                                       "connection.", "upstream_unavailable")
        self.metrics.upstream_errors.labels(provider.name, kind).inc()
        return self.refuse(ctx, status, msg, "upstream_error", code, action="error")

    def _upstream_status(self, ctx: _Ctx, provider: ProviderConfig, status: int, content: bytes,
                         headers: Mapping[str, str]) -> Response:
        """An upstream error answer, reshaped for the client (never the upstream's credentials problem)."""
        self.metrics.upstream_errors.labels(provider.name, str(status)).inc()
        message = ""
        code: str | None = None
        etype = "upstream_error"
        try:
            err = json.loads(content).get("error")
            if isinstance(err, dict):
                message = str(err.get("message") or "")[:300]
                code = err.get("code") if isinstance(err.get("code"), str) else None
                etype = str(err.get("type") or etype)
            elif isinstance(err, str):
                message = err[:300]
        except (ValueError, AttributeError):
            pass
        if status in (401, 403):
            return self.refuse(ctx, 502, f"Upstream {provider.name} refused the gateway's credentials; "
                               "tell your gateway operator.", "upstream_error", "upstream_auth", action="error")
        if status == 429:
            h = {"retry-after": headers["retry-after"]} if "retry-after" in headers else None
            return self.refuse(ctx, 429, f"Upstream {provider.name} is rate limiting: {message}".rstrip(": "),
                               "rate_limit_exceeded", code or "upstream_rate_limited", action="error", headers=h)
        if status >= 500:
            return self.refuse(ctx, 502, f"Upstream {provider.name} failed (HTTP {status}).", "upstream_error",
                               "upstream_error", action="error")
        return self.refuse(ctx, status, message or f"Upstream {provider.name} refused the request (HTTP {status}).",
                           etype, code, action="error")

    def _usage(self, ctx: _Ctx, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        ctx.prompt_tokens = pt if isinstance(pt, int) else 0
        ctx.completion_tokens = ct if isinstance(ct, int) else 0
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            ctx.cached_tokens = details["cached_tokens"]
        elif isinstance(usage.get("prompt_cache_hit_tokens"), int):  # DeepSeek
            ctx.cached_tokens = usage["prompt_cache_hit_tokens"]

    async def _unary(self, ctx: _Ctx, provider: ProviderConfig, url: URL, payload: bytes,
                     filt: ResponseFilter | None, vault: Vault | None) -> Response:
        client = self.clients[provider.name]
        t = time.perf_counter()
        try:
            async with client.post(url, data=payload, headers=self.upstream_headers[provider.name],
                                   allow_redirects=False) as resp:
                content = await resp.read()
        except _UPSTREAM_ERRORS as exc:
            ctx.upstream_ms = (time.perf_counter() - t) * 1000
            return self._upstream_failure(ctx, provider, exc)
        ctx.upstream_ms = (time.perf_counter() - t) * 1000
        if resp.status != 200:
            return self._upstream_status(ctx, provider, resp.status, content, resp.headers)
        try:
            obj = _loads(content)
        except ValueError:
            return self.refuse(ctx, 502, f"Upstream {provider.name} answered with invalid JSON.", "upstream_error",
                               "upstream_invalid", action="error")
        if isinstance(obj, dict):
            self._usage(ctx, obj.get("usage"))
        try:
            changed = process_response_body(obj, filt, vault)
        except ResponseBlocked as exc:
            if filt is not None:
                ctx.response_findings = filt.findings
            return self.refuse(ctx, 422, "The model's answer was withheld by redline policy "
                               f"(found: {', '.join(exc.types)}).", "invalid_request_error", "response_blocked",
                               action="block")
        except Exception:
            log.exception("request %s: response inspection failed", ctx.rid)
            return self.refuse(ctx, 502, "Inspection of the model's answer failed; it was withheld.",
                               "server_error", "inspection_failed", action="error")
        if filt is not None:
            ctx.response_findings = filt.findings
            if filt.findings and ctx.action == "allow":
                ctx.action = "redact"
        ctx.status = 200
        self.finish(ctx)
        return Response(_dumps(obj) if changed else content, media_type=_JSON, headers={"x-request-id": ctx.rid})

    async def _stream(self, ctx: _Ctx, provider: ProviderConfig, url: URL, payload: bytes,
                      state: StreamState) -> Response:
        client = self.clients[provider.name]
        t = time.perf_counter()
        try:
            resp = await client.post(url, data=payload, headers=self.upstream_headers[provider.name],
                                     allow_redirects=False)
        except _UPSTREAM_ERRORS as exc:
            ctx.upstream_ms = (time.perf_counter() - t) * 1000
            return self._upstream_failure(ctx, provider, exc)
        if resp.status != 200:
            try:
                content = await resp.read()
            except _UPSTREAM_ERRORS:
                content = b""
            finally:
                resp.release()
            ctx.upstream_ms = (time.perf_counter() - t) * 1000
            return self._upstream_status(ctx, provider, resp.status, content, resp.headers)
        return _SSEResponse(self, ctx, provider, resp, state, t)


class _SSEResponse(Response):
    """Relays an upstream SSE stream; cancels the upstream request when the client goes away."""

    def __init__(self, gw: Gateway, ctx: _Ctx, provider: ProviderConfig, resp: aiohttp.ClientResponse,
                 state: StreamState,
                 t_upstream: float) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.gw = gw
        self.ctx = ctx
        self.provider = provider
        self.resp = resp
        self.state = state
        self.t_upstream = t_upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-request-id", ctx.rid.encode())]})
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    while True:
                        msg = await receive()
                        if msg["type"] == "http.disconnect":
                            ctx.error = "client disconnected"
                            ctx.status = 499
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                await self._relay(send)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                # Pool the connection only when the upstream's answer was read to its end; otherwise (client
                # gone, upstream failure) close it, so the upstream sees the request abandoned.
                if self.resp.content.is_eof():
                    self.resp.release()
                else:
                    self.resp.close()
                ctx.upstream_ms = (time.perf_counter() - self.t_upstream) * 1000
                if self.state.filt is not None:
                    ctx.response_findings = self.state.filt.findings
                    if self.state.filt.findings and ctx.action == "allow":
                        ctx.action = "redact"
                usage = self.state.usage
                if usage is not None:
                    self.gw._usage(ctx, usage)
                self.gw.finish(ctx)

    async def _relay(self, send: Send) -> None:
        ctx = self.ctx
        state = self.state
        parser = SSEParser()
        done = False
        failure: bytes | None = None

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        try:
            async for raw in self.resp.content.iter_any():
                for payload in parser.feed(raw):
                    if payload.strip() == b"[DONE]":
                        done = True
                        break
                    try:
                        obj = _loads(payload)
                    except ValueError:
                        failure = sse_error(f"Upstream {self.provider.name} sent an invalid stream event.",
                                            code="upstream_invalid")
                        break
                    if isinstance(obj, dict) and "error" in obj and not obj.get("choices"):
                        ctx.error = "upstream error event"
                        ctx.action = "error"
                        await emit(sse_event({"error": obj["error"]}))
                        done = True
                        failure = b""
                        break
                    out = state.transform(obj)
                    if out is not None:
                        await emit(sse_event(out))
                if done or failure is not None:
                    break
        except ResponseBlocked as exc:
            ctx.action = "block"
            failure = sse_error(f"The rest of the model's answer was withheld by redline policy (found: "
                                f"{', '.join(exc.types)}).", "invalid_request_error", "response_blocked")
        except TimeoutError:
            self.gw.metrics.upstream_errors.labels(self.provider.name, "timeout").inc()
            failure = sse_error(f"Upstream {self.provider.name} timed out mid-stream.", code="upstream_timeout")
        except aiohttp.ClientError:
            self.gw.metrics.upstream_errors.labels(self.provider.name, "stream_cut").inc()
            failure = sse_error(f"Upstream {self.provider.name} closed the stream early.", code="upstream_stream_cut")
        if failure is None and not done:
            unfinished = state.open_choices - state.finished_choices
            if unfinished or not state.open_choices:
                self.gw.metrics.upstream_errors.labels(self.provider.name, "stream_cut").inc()
                failure = sse_error(f"Upstream {self.provider.name} ended the stream before it was complete.",
                                    code="upstream_stream_cut")
        if failure:
            ctx.error = ctx.error or "upstream stream failed"
            if ctx.action != "block":
                ctx.action = "error"
            ctx.status = 200
            await emit(failure)
        else:
            try:
                tail = state.flush_all()
            except ResponseBlocked as exc:
                ctx.action = "block"
                await emit(sse_error(f"The rest of the model's answer was withheld by redline policy (found: "
                                     f"{', '.join(exc.types)}).", "invalid_request_error", "response_blocked"))
                tail = None
            if tail is not None:
                await emit(sse_event(tail))
            if done and failure is None:
                await emit(b"data: [DONE]\n\n")
            ctx.status = 200
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _audit_prompt(texts: list[str], found: list[tuple[int, Finding]]) -> str:
    """The prompt as the audit log may keep it: every finding masked, whatever the policy did with it."""
    by_seg: dict[int, list[tuple[int, int, str]]] = {}
    for i, f in found:
        by_seg.setdefault(i, []).append((f.start, f.end, f"[{f.type}]"))
    return SEP.join(replace_spans(t, by_seg.get(i, [])) for i, t in enumerate(texts))[:64 * 1024]


_UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)


def _make_client(p: ProviderConfig) -> aiohttp.ClientSession:
    """A pooled keep-alive client for one provider (aiohttp: C-accelerated HTTP parser, cheap per request).

    Timeouts as before: ``timeout`` is the longest wait for upstream data (each read, not the whole answer) and
    for a free pooled connection, ``connect_timeout`` the longest wait for a new TCP connection.
    """
    # Idle connections are dropped after 5 s (as httpx did): below the idle timeout of most servers (uvicorn's
    # is 5 s), so a request is rarely sent on a connection the upstream is closing.
    connector = aiohttp.TCPConnector(limit=p.max_connections, limit_per_host=0, keepalive_timeout=5.0)
    timeout = aiohttp.ClientTimeout(total=None, connect=p.timeout + p.connect_timeout,
                                    sock_connect=p.connect_timeout, sock_read=p.timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False, auto_decompress=True,
                                 raise_for_status=False)


# ---------------------------------------------------------------------------------------------------------
# routes


def _record_dict(r: KeyRecord) -> dict[str, Any]:
    d = asdict(r)
    for k in ("created", "revoked"):
        if d[k] is not None:
            d[k] = d[k].isoformat()
    return d


def create_app(config: GatewayConfig, *, key_store: KeyStore | None = None, audit_store: AuditStore | None = None,
               scanner: Scanner | None = None) -> Starlette:
    """The gateway as an ASGI app. Stores default to those named in the config (``store.audit``, ``store.keys``)."""
    gw = Gateway(config, key_store=key_store, audit_store=audit_store, scanner=scanner)

    def endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await gw.proxy(request, name)
        return handler

    async def models(request: Request) -> Response:
        from redline.gateway.limits import model_allowed

        key = gw.authenticate(request)
        if key is None:
            return error_response(401, "Missing or invalid API key.", code="invalid_api_key")
        data = [{"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}
                for m in config.models if gw._providers[m.provider].enabled and model_allowed(key, m.name)]
        return JSONResponse({"object": "list", "data": data})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        gw.metrics.audit_dropped.set(gw.writer.stats().dropped)
        body, ctype = gw.metrics.render()
        return Response(body, media_type=ctype)

    def admin(request: Request) -> Response | None:
        key = gw.authenticate(request)
        if key is None:
            return error_response(401, "Missing or invalid API key.", code="invalid_api_key")
        if not key.admin:
            return error_response(403, "This endpoint needs an admin key.", "permission_denied", "admin_required")
        return None

    async def admin_keys(request: Request) -> Response:
        if (denied := admin(request)) is not None:
            return denied
        if request.method == "GET":
            records = await asyncio.to_thread(gw.key_store.list)
            return JSONResponse({"object": "list", "data": [_record_dict(r) for r in records]})
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict) or not isinstance(spec.get("team"), str):
                raise ValueError("a key needs a `team`")
            allowed = {"team", "user", "name", "admin", "budget_usd", "rpm", "models"}
            if set(spec) - allowed:
                raise ValueError(f"unknown field(s): {', '.join(sorted(set(spec) - allowed))}")
            rec, secret = await asyncio.to_thread(lambda: gw.key_store.create(**spec))
        except (ValueError, TypeError) as exc:
            return error_response(400, str(exc), code="invalid_key_spec")
        return JSONResponse({"key": _record_dict(rec), "secret": secret}, status_code=201)

    async def admin_revoke(request: Request) -> Response:
        if (denied := admin(request)) is not None:
            return denied
        key_id = request.path_params["key_id"]
        ok = await asyncio.to_thread(gw.key_store.revoke, key_id)
        gw._auth_cache.clear()
        if not ok:
            return error_response(404, f"No active key {key_id!r}.", code="key_not_found")
        return JSONResponse({"revoked": key_id})

    async def admin_usage(request: Request) -> Response:
        if (denied := admin(request)) is not None:
            return denied
        from redline.gateway.usage import parse_when, row_dict

        by = request.query_params.get("by", "team")
        if by not in ("team", "model", "provider", "key"):
            return error_response(400, "`by` must be team, model, provider or key.", code="invalid_group")
        try:
            since = parse_when(request.query_params.get("since", "30d"))
        except ValueError as exc:
            return error_response(400, str(exc), code="invalid_since")
        rows = await asyncio.to_thread(gw.audit_store.usage, since, by)  # type: ignore[arg-type]
        return JSONResponse({"by": by, "since": since.isoformat(), "data": [row_dict(r) for r in rows]})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"Unknown endpoint {request.url.path}.", code="unknown_endpoint")

    async def bad_method(request: Request, exc: Exception) -> Response:
        return error_response(405, f"Method {request.method} not allowed here.", code="method_not_allowed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.startup()
        try:
            yield
        finally:
            await gw.shutdown()

    routes = [
        Route("/v1/chat/completions", endpoint("chat.completions"), methods=["POST"]),
        Route("/v1/completions", endpoint("completions"), methods=["POST"]),
        Route("/v1/embeddings", endpoint("embeddings"), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/keys", admin_keys, methods=["GET", "POST"]),
        Route("/admin/keys/{key_id}", admin_revoke, methods=["DELETE"]),
        Route("/admin/usage", admin_usage, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: bad_method})
    app.state.gateway = gw
    if config.ui.enabled:  # the dashboard at /ui
        from redline.gateway.ui import mount_ui

        mount_ui(app, gw)
    return app


def app_from_env() -> Starlette:
    """Factory for uvicorn workers: the config path comes from ``$REDLINE_GATEWAY_CONFIG``."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"set {CONFIG_ENV} to the gateway's config file")
    _redacted_logs()
    return create_app(load_config(path))


def _redacted_logs() -> None:
    """The gateway's own log lines (warnings, tracebacks of failed requests) go through redline's redacting
    filter: an exception message quoting part of a request must not put a key into the service's log."""
    import logging as std_logging

    from redline.logging import RedactingFilter

    logger = std_logging.getLogger("redline")
    if any(isinstance(f, RedactingFilter) for h in logger.handlers for f in h.filters):
        return
    handler = std_logging.StreamHandler()
    handler.setFormatter(std_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.propagate = False
