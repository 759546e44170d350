"""Policy evaluation: findings against per-provider / per-model rules → one decision for the request.

Lookup for a finding of type T and kind K, sent to model M at provider P: ``policy.models[M]`` (T, then K),
then ``policy.providers[P]`` (T, then K), then ``policy.default`` (T, then K). The first hit wins. The
default layer always has every kind (built-in defaults: secrets blocked, personal data pseudonymised).

Across findings the strongest action wins: block > reroute > pseudonymize / redact > allow. A reroute is
evaluated again under the target provider's rules (which may allow what the first provider may not see);
a second reroute is refused rather than followed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from redline.engine.finding import CONFIDENCE_RANK, Finding
from redline.gateway.config import ActionSpec, GatewayConfig, RedactWith, Reroute

Verdict = Literal["allow", "redact", "pseudonymize", "block", "reroute"]
_RANK: dict[str, int] = {"allow": 0, "redact": 1, "pseudonymize": 2, "reroute": 3, "block": 4}


@dataclass(frozen=True, slots=True)
class Resolved:
    action: Verdict
    operator: str | None = None  # for redact: the redaction operator (None: mask)
    reroute: Reroute | None = None


ALLOW = Resolved("allow")


def _resolve(spec: ActionSpec) -> Resolved:
    if isinstance(spec, Reroute):
        return Resolved("reroute", reroute=spec)
    if isinstance(spec, RedactWith):
        return Resolved("redact", operator=spec.redact)
    return Resolved(spec)


@dataclass
class Decision:
    action: Verdict  # overall, for the audit event
    provider: str  # provider that will be asked (after reroute)
    upstream_model: str | None  # model name at that provider (None: keep the request's)
    actions: list[Resolved] = field(default_factory=list)  # aligned with the findings given
    blocked_types: list[str] = field(default_factory=list)
    rerouted_from: str | None = None
    reason: str | None = None  # our message when blocked


class PolicyEngine:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.min_rank = CONFIDENCE_RANK[config.policy.min_confidence]
        self._cache: dict[tuple[str, str, str, str, str], Resolved] = {}
        pol = config.policy
        # Does any response rule do anything? (skip response scanning entirely when not)
        self.response_active: dict[tuple[str, str], bool] = {}
        self._any_response = any(
            a != "allow" for layer in (pol.default, *pol.providers.values(), *pol.models.values())
            for a in layer.response.values())

    def lookup(self, side: Literal["request", "response"], provider: str, model: str, kind: str,
               type: str) -> Resolved:
        key = (side, provider, model, kind, type)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        pol = self.config.policy
        layers = [pol.models.get(model), pol.providers.get(provider), pol.default]
        res = ALLOW
        for layer in layers:
            if layer is None:
                continue
            table = layer.request if side == "request" else layer.response
            spec = table.get(type)
            if spec is None:
                spec = table.get(kind)
            if spec is not None:
                res = _resolve(spec)
                break
        if len(self._cache) < 100_000:
            self._cache[key] = res
        return res

    def response_kinds(self, kind_of_type: dict[str, str]) -> set[str]:
        """The finding kinds some response rule acts on: answers need scanning for these only."""
        pol = self.config.policy
        kinds: set[str] = set()
        for layer in (pol.default, *pol.providers.values(), *pol.models.values()):
            for key, action in layer.response.items():
                if action != "allow":
                    kinds.add(kind_of_type.get(key, key))
        return kinds

    def response_scanning(self, provider: str, model: str) -> bool:
        """Whether responses from this provider/model need scanning at all."""
        key = (provider, model)
        hit = self.response_active.get(key)
        if hit is None:
            pol = self.config.policy
            layers = [pol.models.get(model), pol.providers.get(provider), pol.default]
            hit = self._any_response and any(
                a != "allow" for layer in layers if layer is not None for a in layer.response.values())
            self.response_active[key] = hit
        return hit

    def counts(self, finding: Finding) -> bool:
        return CONFIDENCE_RANK[finding.confidence] >= self.min_rank

    def evaluate(self, provider: str, model: str, findings: Sequence[Finding]) -> Decision:
        """Decide what happens to a request for ``model`` (the client's name) at ``provider``."""
        decision = self._evaluate_once(provider, model, findings)
        if decision.action != "reroute":
            return decision
        target_spec = next(a.reroute for a in decision.actions if a.action == "reroute" and a.reroute is not None)
        target = target_spec.reroute
        upstream_model = self.config.reroute_model(target_spec)
        policy_model = target_spec.model or upstream_model or model
        if target == provider:
            second = self._evaluate_once(provider, model, findings, reroute_as="allow")
            second.upstream_model = upstream_model
            return second
        second = self._evaluate_once(target, policy_model, findings)
        second.rerouted_from = provider
        second.upstream_model = upstream_model
        if second.action == "reroute":
            return Decision("block", provider, None, second.actions,
                            blocked_types=sorted({f.type for f, a in zip(findings, second.actions, strict=True)
                                                  if a.action == "reroute"}),
                            reason=f"the request was rerouted to {target}, whose policy reroutes it again")
        if second.action in ("allow", "redact", "pseudonymize"):
            second.action = "reroute"
        return second

    def _evaluate_once(self, provider: str, model: str, findings: Sequence[Finding],
                       reroute_as: Verdict | None = None) -> Decision:
        actions: list[Resolved] = []
        best = "allow"
        blocked: set[str] = set()
        for f in findings:
            if not self.counts(f):
                actions.append(ALLOW)
                continue
            res = self.lookup("request", provider, model, f.kind, f.type)
            if res.action == "reroute" and reroute_as is not None:
                res = Resolved(reroute_as)
            actions.append(res)
            if res.action == "block":
                blocked.add(f.type)
            if _RANK[res.action] > _RANK[best]:
                best = res.action
        verdict: Verdict = best  # type: ignore[assignment]
        return Decision(verdict, provider, None, actions, sorted(blocked))

    def response_actions(self, provider: str, model: str, findings: Sequence[Finding]) -> list[Resolved]:
        return [self.lookup("response", provider, model, f.kind, f.type) if self.counts(f) else ALLOW
                for f in findings]
