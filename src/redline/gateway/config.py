"""Gateway configuration: a YAML file validated with pydantic, errors naming the bad key.

See docs/gateway.md for the format and examples/redline.yaml for a complete example.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from redline.engine.finding import KINDS

SimpleAction = Literal["allow", "redact", "pseudonymize", "block"]
RESPONSE_ACTIONS = ("allow", "redact", "block")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*\Z")


class ConfigError(ValueError):
    """The configuration is wrong. The message names the key (``providers[1].base_url``) and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reroute(_Strict):
    """Send the request to another provider (and model) instead of refusing or rewriting it."""

    reroute: str
    model: str | None = None


REDACT_OPERATORS = ("mask", "partial", "hash", "summary")


class RedactWith(_Strict):
    """``redact`` with a named operator of the redaction module: mask (default), partial, hash, summary."""

    redact: str

    @field_validator("redact")
    @classmethod
    def _operator(cls, value: str) -> str:
        if value not in REDACT_OPERATORS:
            raise ValueError(f"unknown redaction operator {value!r} (use {', '.join(REDACT_OPERATORS)})")
        return value


ActionSpec = SimpleAction | Reroute | RedactWith


def _coerce_action(value: Any) -> Any:
    # Shorthand: "reroute:local" / "reroute: local" as a string.
    if isinstance(value, str):
        v = value.strip()
        if v.startswith("reroute:"):
            return {"reroute": v.split(":", 1)[1].strip()}
        return v
    return value


class Rules(_Strict):
    """Actions per finding kind (``secret``, ``pii``, ``chat``) or rule type (``email``, ``aws-access-key-id``)."""

    request: dict[str, ActionSpec] = Field(default_factory=dict)
    response: dict[str, ActionSpec] = Field(default_factory=dict)

    @field_validator("request", "response", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _coerce_action(v) for k, v in value.items()}
        return value

    @field_validator("response")
    @classmethod
    def _response_actions(cls, value: dict[str, ActionSpec]) -> dict[str, ActionSpec]:
        for key, action in value.items():
            if isinstance(action, Reroute) or action == "pseudonymize":
                raise ValueError(f"{key}: responses can only be allow, redact or block")
        return value


DEFAULT_REQUEST: dict[str, ActionSpec] = {"secret": "block", "pii": "pseudonymize", "chat": "allow"}
DEFAULT_RESPONSE: dict[str, ActionSpec] = {"secret": "redact", "pii": "allow", "chat": "allow"}


class PolicyConfig(_Strict):
    min_confidence: Literal["low", "medium", "high"] = "low"
    default: Rules = Field(default_factory=Rules)
    providers: dict[str, Rules] = Field(default_factory=dict)
    models: dict[str, Rules] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _defaults(self) -> PolicyConfig:
        # Built-in defaults under the configured ones: every kind always has an action.
        merged = Rules(request={**DEFAULT_REQUEST, **self.default.request},
                       response={**DEFAULT_RESPONSE, **self.default.response})
        object.__setattr__(self, "default", merged)
        return self


class ProviderConfig(_Strict):
    name: str
    base_url: str
    api_key_env: str | None = None  # name of the environment variable holding the upstream key
    enabled: bool = True  # false: an organisation's ban; requests for its models are refused
    timeout: float = Field(default=120.0, gt=0)  # seconds without upstream data before giving up
    connect_timeout: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    stream_usage: bool = True  # ask upstream for usage in streams (stream_options.include_usage)
    headers: dict[str, str] = Field(default_factory=dict)
    default_model: str | None = None  # upstream model used when a request is rerouted here

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '-', '_', '.'")
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", value):
            raise ValueError("must be the name of an environment variable, not the key itself")
        return value

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ModelConfig(_Strict):
    name: str  # what clients ask for
    provider: str
    upstream: str | None = None  # the model's name at the provider (default: name)

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.name


class AuthConfig(_Strict):
    cache_seconds: float = Field(default=5.0, ge=0)  # authenticated keys are cached this long (revocation delay)


class AuditConfig(_Strict):
    store_redacted_prompt: bool = False
    batch_size: int = Field(default=256, ge=1)
    flush_seconds: float = Field(default=1.0, gt=0)


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    default_key_rpm: int | None = Field(default=None, ge=1)  # for keys without their own rpm
    team_rpm: dict[str, int] = Field(default_factory=dict)
    team_budget_usd: dict[str, float] = Field(default_factory=dict)  # per calendar month


class StoreConfig(_Strict):
    audit: str | None = None  # path, sqlite:///PATH or clickhouse://… (default $REDLINE_STORE, ./redline-audit.db)
    keys: str | None = None  # SQLite path (default $REDLINE_KEYS, ./redline-keys.db)
    # Use a ClickHouse store even as the passwordless `default` user or in plain text to a non-loopback host.
    allow_insecure: bool = False


class UiConfig(_Strict):
    """The dashboard at /ui (admin keys log in)."""

    enabled: bool = True
    session_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)  # idle sessions expire after this
    # Environment variable holding the cookie-signing secret (>= 32 chars); unset: a random one per start,
    # so sessions end when the gateway restarts and each worker process has its own (use one worker or set it).
    session_secret_env: str | None = None
    secure_cookie: bool | None = None  # None: Secure when the request came over https

    @field_validator("session_secret_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", value):
            raise ValueError("must be the name of an environment variable, not the secret itself")
        return value


class GatewayConfig(_Strict):
    providers: list[ProviderConfig]
    models: list[ModelConfig] = Field(default_factory=list)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    prices: str | None = None  # a price file merged over the shipped table
    detection: DetectionConfig = Field(default_factory=lambda: DetectionConfig())
    auth: AuthConfig = Field(default_factory=AuthConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    ui: UiConfig = Field(default_factory=UiConfig)

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        names = [p.name for p in self.providers]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise _KeyProblem(f"providers[{i}].name", f"duplicate provider {n!r}")
        known = set(names)
        seen: set[str] = set()
        for i, m in enumerate(self.models):
            if m.provider not in known:
                raise _KeyProblem(f"models[{i}].provider", f"unknown provider {m.provider!r} (known: {_list(known)})")
            if m.name in seen:
                raise _KeyProblem(f"models[{i}].name", f"duplicate model {m.name!r}")
            seen.add(m.name)
        for name in self.policy.providers:
            if name not in known:
                raise _KeyProblem(f"policy.providers.{name}", f"unknown provider (known: {_list(known)})")
        for name in self.policy.models:
            if name not in seen:
                raise _KeyProblem(f"policy.models.{name}", f"unknown model (known: {_list(seen)})")
        for where, rules in self._layers():
            for side in ("request", "response"):
                for key, action in getattr(rules, side).items():
                    if isinstance(action, Reroute):
                        self._check_reroute(f"{where}.{side}.{key}", action)
        return self

    def _layers(self) -> Iterable[tuple[str, Rules]]:
        yield "policy.default", self.policy.default
        for name, rules in self.policy.providers.items():
            yield f"policy.providers.{name}", rules
        for name, rules in self.policy.models.items():
            yield f"policy.models.{name}", rules

    def _check_reroute(self, where: str, action: Reroute) -> None:
        target = self.provider(action.reroute)
        if target is None:
            raise _KeyProblem(where, f"reroute to unknown provider {action.reroute!r}")
        if not target.enabled:
            raise _KeyProblem(where, f"reroute to disabled provider {action.reroute!r}")
        if self.reroute_model(action) is None:
            raise _KeyProblem(where, f"provider {action.reroute!r} has no model to reroute to: give `model:` here, "
                                     f"default_model on the provider, or map a model to it")

    def provider(self, name: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def reroute_model(self, action: Reroute) -> str | None:
        """The upstream model name a rerouted request uses at the target provider."""
        if action.model:
            m = self.model(action.model)
            return m.upstream_name if m is not None and m.provider == action.reroute else action.model
        target = self.provider(action.reroute)
        if target is not None and target.default_model:
            return target.default_model
        for m in self.models:
            if m.provider == action.reroute:
                return m.upstream_name
        return None

    def check_types(self, known_types: Iterable[str]) -> None:
        """Every policy key must be a finding kind or a known rule type (typos would silently allow)."""
        valid = set(KINDS) | set(known_types)
        for where, rules in self._layers():
            for side in ("request", "response"):
                for key in getattr(rules, side):
                    if key not in valid:
                        close = [t for t in sorted(valid) if key in t or t in key][:5]
                        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
                        raise ConfigError(f"{where}.{side}.{key}: not a finding kind (secret, pii, chat) "
                                          f"nor a known rule type{hint}")


class DetectionConfig(_Strict):
    rules: list[str] = Field(default_factory=list)  # extra rule files or folders
    disable: list[str] = Field(default_factory=list)
    enable: list[str] = Field(default_factory=list)
    backend: Literal["auto", "hyperscan", "re"] | None = None


GatewayConfig.model_rebuild()


class _KeyProblem(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _list(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-plain") or "[" in str(part):
            continue  # pydantic's names for validators and union members, not keys
        elif part in ("Reroute", "RedactWith", "literal['allow','redact','pseudonymize','block']"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_config(data: Any, *, source: str = "config") -> GatewayConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return GatewayConfig.model_validate(data)
    except _KeyProblem as exc:
        raise ConfigError(f"{source}: {exc.path}: {exc.message}") from None
    except ValidationError as exc:
        lines = []
        seen: set[str] = set()
        for err in exc.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _KeyProblem):
                line = f"{ctx_err.path}: {ctx_err.message}"
            else:
                where = _loc(tuple(err["loc"]))
                msg = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = "unknown key"
                elif err["type"] in ("literal_error", "model_type", "model_attributes_type") and (
                        ".request." in f".{where}" or ".response." in f".{where}"):
                    msg = ("not an action: use allow, redact, pseudonymize, block, {reroute: PROVIDER} "
                           "or {redact: OPERATOR}")
                line = f"{where}: {msg}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        raise ConfigError(f"{source}: " + "; ".join(lines[:5])) from None


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    cfg = parse_config(data, source=str(p))
    base = p.parent
    # Paths in the file are relative to the file.

    def rel(path: str) -> str:
        return path if "://" in path or Path(path).is_absolute() else str(base / path)

    update: dict[str, Any] = {}
    if cfg.detection.rules:
        update["detection"] = cfg.detection.model_copy(update={"rules": [rel(r) for r in cfg.detection.rules]})
    if cfg.prices:
        update["prices"] = rel(cfg.prices)
    st = {k: rel(v) for k, v in (("audit", cfg.store.audit), ("keys", cfg.store.keys)) if v}
    if st:
        update["store"] = cfg.store.model_copy(update=st)
    return cfg.model_copy(update=update) if update else cfg
