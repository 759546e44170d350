"""Redaction policy: which operator applies to which kind and type of finding.

A policy file (TOML or YAML)::

    [kinds]                      # operator per kind: secret, pii, chat
    secret = "mask"
    pii = "pseudonym"
    chat = "keep"

    [types]                      # overrides per finding type (rule id)
    credit-card = "partial"
    email = { operator = "hash" }
    openai-project-key = { operator = "mask", template = "[OPENAI KEY]" }

    [mask]
    template = "[REDACTED:{type}]"   # {type} and {kind} are filled in

    [hash]
    key_env = "REDLINE_FINGERPRINT_KEY"  # or key_file = "/run/secrets/redline-key"

    [pseudonym]
    scope = "file"               # file | record | run (CLI); the library takes a Vault

    [partial]
    keep = 4                     # trailing characters kept by `partial` (fewer for short values)
    template = "[REDACTED:{type}:{last}]"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from redline.engine.finding import FINGERPRINT_ENV, KINDS, Fingerprinter

Operator = Literal["keep", "mask", "partial", "hash", "pseudonym", "drop", "summary"]
OPERATORS: tuple[Operator, ...] = ("keep", "mask", "partial", "hash", "pseudonym", "drop", "summary")
Scope = Literal["file", "record", "run"]
SCOPES: tuple[Scope, ...] = ("file", "record", "run")

DEFAULT_MASK_TEMPLATE = "[REDACTED:{type}]"
DEFAULT_PARTIAL_TEMPLATE = "[REDACTED:{type}:{last}]"
# Replacement text goes inside JSON strings at any escaping depth, so it must need no escaping.
_UNSAFE_TEMPLATE = re.compile(r'["\\\x00-\x1f\x7f]')
_TYPE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PolicyError(ValueError):
    """An invalid policy; the message names the file and the bad key."""


@dataclass(frozen=True, slots=True)
class Rule:
    """The operator for one kind or type, with its options."""

    operator: Operator
    template: str | None = None


@dataclass(frozen=True)
class Policy:
    """Operators per kind and per type (a type entry wins over its kind's entry)."""

    kinds: Mapping[str, Rule] = field(default_factory=lambda: {
        "secret": Rule("mask"), "pii": Rule("pseudonym"), "chat": Rule("keep"),
    })
    types: Mapping[str, Rule] = field(default_factory=dict)
    mask_template: str = DEFAULT_MASK_TEMPLATE
    partial_template: str = DEFAULT_PARTIAL_TEMPLATE
    hash_key_env: str = FINGERPRINT_ENV
    hash_key_file: str | None = None
    pseudonym_scope: Scope = "file"
    partial_keep: int = 4

    @classmethod
    def default(cls) -> Policy:
        """Secrets masked, personal data pseudonymised (one vault per file), chat kept."""
        return cls()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        p = Path(path)
        try:
            raw = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{p}: cannot read policy: {exc.strerror or exc}") from None
        data: Any
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise PolicyError(f"{p}: invalid YAML: {str(exc).splitlines()[0]}") from None
        else:
            try:
                data = tomllib.loads(raw)
            except tomllib.TOMLDecodeError as exc:
                raise PolicyError(f"{p}: invalid TOML: {exc}") from None
        return cls.from_dict(data if data is not None else {}, source=str(p))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "policy") -> Policy:
        def err(key: str, msg: str) -> PolicyError:
            return PolicyError(f"{source}: {key}: {msg}")

        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: a policy is a table/mapping at the top level")
        allowed = {"version", "kinds", "types", "mask", "hash", "pseudonym", "partial"}
        for key in data:
            if key not in allowed:
                raise err(str(key), f"unknown key (expected one of {', '.join(sorted(allowed))})")
        version = data.get("version", 1)
        if version != 1:
            raise err("version", f"unsupported policy version {version!r} (expected 1)")
        kinds = dict(cls().kinds)
        for k, v in _section(data, "kinds", err).items():
            if k not in KINDS:
                raise err(f"kinds.{k}", f"unknown kind (expected {', '.join(KINDS)})")
            kinds[k] = _rule(v, f"kinds.{k}", err)
        types: dict[str, Rule] = {}
        for k, v in _section(data, "types", err).items():
            if not _TYPE_ID.match(k):
                raise err(f"types.{k}", "not a finding type (rule id)")
            types[k] = _rule(v, f"types.{k}", err)
        mask = _section(data, "mask", err)
        _only(mask, {"template"}, "mask", err)
        template = mask.get("template", DEFAULT_MASK_TEMPLATE)
        _check_template(template, "mask.template", err)
        part = _section(data, "partial", err)
        _only(part, {"keep", "template"}, "partial", err)
        keep = part.get("keep", 4)
        if not isinstance(keep, int) or isinstance(keep, bool) or not 0 <= keep <= 8:
            raise err("partial.keep", "must be an integer from 0 to 8")
        ptemplate = part.get("template", DEFAULT_PARTIAL_TEMPLATE)
        _check_template(ptemplate, "partial.template", err)
        hsec = _section(data, "hash", err)
        _only(hsec, {"key_env", "key_file"}, "hash", err)
        key_env = hsec.get("key_env", FINGERPRINT_ENV)
        if not isinstance(key_env, str) or not key_env:
            raise err("hash.key_env", "must be the name of an environment variable")
        key_file = hsec.get("key_file")
        if key_file is not None and not isinstance(key_file, str):
            raise err("hash.key_file", "must be a path")
        psec = _section(data, "pseudonym", err)
        _only(psec, {"scope"}, "pseudonym", err)
        scope = psec.get("scope", "file")
        if scope not in SCOPES:
            raise err("pseudonym.scope", f"unknown scope {scope!r} (expected {', '.join(SCOPES)})")
        return cls(kinds=kinds, types=types, mask_template=template, partial_template=ptemplate, hash_key_env=key_env,
                   hash_key_file=key_file, pseudonym_scope=cast(Scope, scope), partial_keep=keep)

    def rule_for(self, kind: str, type: str) -> Rule:
        r = self.types.get(type)
        if r is not None:
            return r
        return self.kinds.get(kind) or Rule("mask")

    def operator_for(self, kind: str, type: str) -> Operator:
        return self.rule_for(kind, type).operator

    @property
    def operators(self) -> set[Operator]:
        return {r.operator for r in (*self.kinds.values(), *self.types.values())}

    def kinds_needed(self, type_kinds: Mapping[str, str] | None = None) -> set[str] | None:
        """Kinds whose findings can change the output; None when every kind may matter.

        Scanning only these kinds is exact: findings that are kept are ignored anyway. ``type_kinds`` maps
        rule ids to kinds (from the scanner's rules) so that a type override can be placed.
        """
        needed: set[str] = {k for k in KINDS if self.rule_for(k, "").operator != "keep"}
        for t, r in self.types.items():
            if r.operator == "keep":
                continue
            kind = (type_kinds or {}).get(t)
            if kind is None:
                return None
            needed.add(kind)
        return None if needed == set(KINDS) else needed

    def fingerprinter(self) -> Fingerprinter:
        """The HMAC used by ``hash``; the key comes from ``hash.key_file`` or ``hash.key_env``."""
        if self.hash_key_file:
            try:
                key = Path(self.hash_key_file).read_bytes().strip()
            except OSError as exc:
                raise PolicyError(f"hash.key_file: cannot read {self.hash_key_file}: {exc.strerror or exc}") from None
            if not key:
                raise PolicyError(f"hash.key_file: {self.hash_key_file} is empty")
            return Fingerprinter(key)
        env = os.environ.get(self.hash_key_env)
        if not env:
            raise PolicyError(f"the hash operator needs a key: set {self.hash_key_env} or hash.key_file in the policy")
        return Fingerprinter(env)


def _section(data: Mapping[str, Any], name: str, err: Any) -> Mapping[str, Any]:
    sec = data.get(name, {})
    if sec is None:
        return {}
    if not isinstance(sec, Mapping):
        raise err(name, "must be a table/mapping")
    return sec


def _only(sec: Mapping[str, Any], keys: set[str], name: str, err: Any) -> None:
    for k in sec:
        if k not in keys:
            raise err(f"{name}.{k}", f"unknown key (expected {', '.join(sorted(keys))})")


def _check_template(template: Any, key: str, err: Any) -> None:
    if not isinstance(template, str) or not template:
        raise err(key, "must be a non-empty string")
    if _UNSAFE_TEMPLATE.search(template):
        raise err(key, "must not contain quotes, backslashes or control characters (it is written inside JSON strings)")
    try:
        template.format(type="t", kind="k", last="1234")
    except (KeyError, IndexError, ValueError) as exc:
        raise err(key, f"bad placeholder {exc} (use {{type}}, {{kind}} and, for partial, {{last}})") from None


def _rule(value: Any, key: str, err: Any) -> Rule:
    if isinstance(value, str):
        value = {"operator": value}
    if not isinstance(value, Mapping):
        raise err(key, "must be an operator name or a table with `operator`")
    _only(value, {"operator", "template"}, key, err)
    op = value.get("operator")
    if op not in OPERATORS:
        raise err(key, f"unknown operator {op!r} (expected {', '.join(OPERATORS)})")
    template = value.get("template")
    if template is not None:
        if op not in ("mask", "partial"):
            raise err(f"{key}.template", "only `mask` and `partial` take a template")
        _check_template(template, f"{key}.template", err)
    return Rule(cast(Operator, op), template)
