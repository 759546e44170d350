"""The AuditStore contract: every backend in factories.AUDIT_STORE_FACTORIES must pass these."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from redline.store.base import AuditEvent, AuditStore

from .conftest import T0, event


def test_round_trip_keeps_every_field(audit_store: AuditStore) -> None:
    e = event(1, ts=T0.replace(microsecond=123456), stream=True, action="redact", status=200,
              finding_counts={"openai-project-key": 2, "email": 1}, finding_kinds={"secret": 2, "pii": 1},
              fingerprints=["a1b2c3d4e5f6a1b2c3d4e5f6", "0f0f0f0f0f0f0f0f0f0f0f0f"], latency_ms=123.5,
              upstream_ms=100.25, prompt_tokens=1200, completion_tokens=300, cost_usd=0.006,
              rerouted_from="deepseek", error=None, redacted_prompt="my key is [REDACTED:openai-project-key]")
    audit_store.write([e])
    got = list(audit_store.events(T0 - timedelta(hours=1)))
    assert got == [e]


def test_optional_fields_may_be_empty(audit_store: AuditStore) -> None:
    e = event(2, key_id=None, team=None, user=None, action="denied", status=401, error="invalid API key")
    audit_store.write([e])
    assert list(audit_store.events(T0)) == [e]


def test_empty_write_is_a_no_op(audit_store: AuditStore) -> None:
    audit_store.write([])
    assert list(audit_store.events(T0 - timedelta(days=1))) == []


def test_naive_datetimes_are_utc(audit_store: AuditStore) -> None:
    audit_store.write([event(0, ts=T0.replace(tzinfo=None))])
    (got,) = audit_store.events(T0.replace(tzinfo=None))
    assert got.ts == T0 and got.ts.tzinfo is not None


def test_events_range_order_and_filters(audit_store: AuditStore) -> None:
    evs = [event(i, team="a" if i % 2 else "b", action="block" if i % 3 == 0 else "allow") for i in range(30)]
    audit_store.write(list(reversed(evs)))  # written out of order, read in time order
    got = list(audit_store.events(T0))
    assert [e.request_id for e in got] == [f"req-{i}" for i in range(30)]
    # since inclusive, until exclusive
    got = list(audit_store.events(T0 + timedelta(seconds=5), T0 + timedelta(seconds=10)))
    assert [e.request_id for e in got] == [f"req-{i}" for i in range(5, 10)]
    assert len(list(audit_store.events(T0, limit=7))) == 7
    assert {e.team for e in audit_store.events(T0, team="a")} == {"a"}
    assert len(list(audit_store.events(T0, team="a"))) == 15
    blocked = list(audit_store.events(T0, action="block"))
    assert [e.request_id for e in blocked] == [f"req-{i}" for i in range(0, 30, 3)]


def test_events_pages_through_many_rows_with_equal_timestamps(audit_store: AuditStore) -> None:
    # Many events share one timestamp: pagination must neither skip nor repeat them.
    evs = [event(i, ts=T0 + timedelta(seconds=i // 700)) for i in range(2500)]
    audit_store.write(evs)
    got = list(audit_store.events(T0))
    assert len(got) == 2500
    assert len({e.request_id for e in got}) == 2500
    assert len(list(audit_store.events(T0, limit=1500))) == 1500


def test_usage_by_each_group(audit_store: AuditStore) -> None:
    audit_store.write([
        event(0, team="research", model="gpt-4o", provider="openai", key_id="rk_1", action="allow",
              prompt_tokens=100, completion_tokens=50, cost_usd=1.0),
        event(1, team="research", model="gpt-4o", provider="openai", key_id="rk_1", action="redact",
              prompt_tokens=200, completion_tokens=10, cost_usd=2.0),
        event(2, team="research", model="deepseek-chat", provider="deepseek", key_id="rk_2", action="block",
              status=403),
        event(3, team="ops", model="deepseek-chat", provider="deepseek", key_id="rk_3", action="reroute",
              rerouted_from="openai", prompt_tokens=10, completion_tokens=10, cost_usd=0.5),
        event(4, team="ops", model="deepseek-chat", provider="deepseek", key_id="rk_3", action="pseudonymize",
              prompt_tokens=1, completion_tokens=1, cost_usd=0.25),
        event(5, team=None, key_id=None, model="gpt-4o", provider="openai", action="denied", status=401),
        event(6, team="ops", model="gpt-4o", provider="openai", key_id="rk_3", action="error", status=502),
    ])
    by_team = {r.group: r for r in audit_store.usage(T0, "team")}
    assert set(by_team) == {"research", "ops", "-"}
    r = by_team["research"]
    assert (r.requests, r.blocked, r.redacted, r.rerouted, r.prompt_tokens, r.completion_tokens) == (
        3, 1, 1, 0, 300, 60)
    assert r.cost_usd == pytest.approx(3.0)
    assert r.cost_per_1k_requests == pytest.approx(1000.0)
    assert r.tokens_per_request == pytest.approx(120.0)
    o = by_team["ops"]
    assert (o.requests, o.redacted, o.rerouted, o.errors) == (3, 1, 1, 1)
    assert by_team["-"].denied == 1
    # highest cost first
    assert audit_store.usage(T0, "team")[0].group == "research"

    by_model = {r.group: r for r in audit_store.usage(T0, "model")}
    assert by_model["gpt-4o"].requests == 4 and by_model["deepseek-chat"].requests == 3
    assert by_model["gpt-4o"].cost_usd == pytest.approx(3.0)
    by_provider = {r.group: r for r in audit_store.usage(T0, "provider")}
    assert by_provider["deepseek"].cost_usd == pytest.approx(0.75)
    by_key = {r.group: r for r in audit_store.usage(T0, "key")}
    assert set(by_key) == {"rk_1", "rk_2", "rk_3", "-"}
    assert by_key["rk_3"].requests == 3

    # the time range applies
    assert sum(r.requests for r in audit_store.usage(T0 + timedelta(seconds=3), "team")) == 4
    assert sum(r.requests for r in audit_store.usage(T0, "team", until=T0 + timedelta(seconds=3))) == 3
    assert audit_store.usage(T0 + timedelta(days=1), "team") == []


def test_usage_rejects_unknown_group(audit_store: AuditStore) -> None:
    with pytest.raises(ValueError):
        audit_store.usage(T0, "colour")  # type: ignore[arg-type]


def test_spend_per_key_and_team(audit_store: AuditStore) -> None:
    audit_store.write([
        event(0, key_id="rk_1", team="a", cost_usd=1.5),
        event(10, key_id="rk_1", team="a", cost_usd=2.0),
        event(20, key_id="rk_2", team="a", cost_usd=4.0),
        event(30, key_id="rk_3", team="b", cost_usd=8.0),
    ])
    assert audit_store.spend(T0, key_id="rk_1") == pytest.approx(3.5)
    assert audit_store.spend(T0 + timedelta(seconds=5), key_id="rk_1") == pytest.approx(2.0)
    assert audit_store.spend(T0, team="a") == pytest.approx(7.5)
    assert audit_store.spend(T0, team="b") == pytest.approx(8.0)
    assert audit_store.spend(T0, key_id="rk_nope") == 0.0
    assert audit_store.spend(T0, team="nope") == 0.0


def test_purge(audit_store: AuditStore) -> None:
    audit_store.write([event(i) for i in range(100)])
    n = audit_store.purge(T0 + timedelta(seconds=40))
    assert n == 40
    left = list(audit_store.events(T0 - timedelta(days=1)))
    assert len(left) == 60 and left[0].request_id == "req-40"
    assert audit_store.purge(T0) == 0


def test_concurrent_writes_and_reads(audit_store: AuditStore) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for j in range(20):
                audit_store.write([event(k * 1000 + j * 10 + m, request_id=f"w{k}-{j}-{m}") for m in range(10)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(20):
                audit_store.usage(T0, "team")
                list(audit_store.events(T0, limit=50))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.requests for r in audit_store.usage(T0 - timedelta(days=1), "team")) == 800


def test_event_dict_round_trip() -> None:
    e = event(3, finding_counts={"email": 1}, fingerprints=["ab"])
    assert AuditEvent.from_dict(e.to_dict()) == e


# ------------------------------------------------------------------------------------ dashboard aggregates


def _mixed() -> list[AuditEvent]:
    return [
        event(0, team="research", key_id="rk_1", provider="openai", model="gpt-4o", action="allow", cost_usd=1.0,
              prompt_tokens=10, completion_tokens=5),
        event(30, team="research", key_id="rk_1", provider="openai", model="gpt-4o", action="redact",
              finding_counts={"email": 2, "openai-project-key": 1}, finding_kinds={"pii": 2, "secret": 1},
              fingerprints=["fp_a", "fp_b"], cost_usd=2.0),
        event(3600, team="ops", key_id="rk_2", provider="deepseek", model="deepseek-chat", action="block",
              status=403, finding_counts={"openai-project-key": 1}, finding_kinds={"secret": 1},
              fingerprints=["fp_b"]),
        event(3700, team="ops", key_id="rk_2", provider="local", model="llama", action="reroute",
              rerouted_from="deepseek", finding_counts={"email": 1}, finding_kinds={"pii": 1},
              fingerprints=["fp_a"], cost_usd=0.5),
        event(7300, team=None, key_id=None, provider="", model="", action="denied", status=401),
    ]


def test_count(audit_store: AuditStore) -> None:
    audit_store.write(_mixed())
    assert audit_store.count() == 5
    assert audit_store.count(T0 + timedelta(seconds=30)) == 4
    assert audit_store.count(None, T0 + timedelta(seconds=30)) == 1
    assert audit_store.count(T0 + timedelta(days=1)) == 0


def test_recent_newest_first_with_filters(audit_store: AuditStore) -> None:
    audit_store.write(_mixed())
    got = audit_store.recent(T0)
    assert [e.request_id for e in got] == ["req-7300", "req-3700", "req-3600", "req-30", "req-0"]
    assert [e.request_id for e in audit_store.recent(T0, limit=2)] == ["req-7300", "req-3700"]
    assert [e.request_id for e in audit_store.recent(T0, team="ops")] == ["req-3700", "req-3600"]
    assert [e.request_id for e in audit_store.recent(T0, action="block")] == ["req-3600"]
    assert [e.request_id for e in audit_store.recent(T0, key_id="rk_1")] == ["req-30", "req-0"]
    assert [e.request_id for e in audit_store.recent(T0, provider="local")] == ["req-3700"]
    assert [e.request_id for e in audit_store.recent(T0, model="gpt-4o", action="redact")] == ["req-30"]
    assert audit_store.recent(T0 + timedelta(seconds=3601)) == audit_store.recent(T0, limit=2)
    assert got[3].finding_counts == {"email": 2, "openai-project-key": 1}


def test_timeseries(audit_store: AuditStore) -> None:
    audit_store.write(_mixed())
    hourly = audit_store.timeseries(T0, bucket_seconds=3600)
    assert [(b, r.group, r.requests) for b, r in hourly] == [
        (T0, "", 2), (T0 + timedelta(hours=1), "", 2), (T0 + timedelta(hours=2), "", 1)]
    first = hourly[0][1]
    assert (first.redacted, first.blocked, first.cost_usd) == (1, 0, pytest.approx(3.0))
    second = hourly[1][1]
    assert (second.blocked, second.rerouted) == (1, 1)
    assert hourly[2][1].denied == 1
    by_team = audit_store.timeseries(T0, T0 + timedelta(hours=2), bucket_seconds=86400, by="team")
    assert [(r.group, r.requests) for _, r in by_team] == [("ops", 2), ("research", 2)]
    assert all(b == T0.replace(hour=0) for b, _ in by_team)
    by_provider = {r.group: r.requests for _, r in audit_store.timeseries(T0, bucket_seconds=60, by="provider")}
    assert by_provider["openai"] == 2 and by_provider["local"] == 1
    with pytest.raises(ValueError):
        audit_store.timeseries(T0, by="colour")  # type: ignore[arg-type]


def test_findings_by_type_and_group(audit_store: AuditStore) -> None:
    audit_store.write(_mixed())
    flat = {(r.type): (r.count, r.events) for r in audit_store.findings(T0)}
    assert flat == {"email": (3, 2), "openai-project-key": (2, 2)}
    assert audit_store.findings(T0)[0].type == "email"
    by_team = {(r.group, r.type): (r.count, r.events) for r in audit_store.findings(T0, by="team")}
    assert by_team == {("research", "email"): (2, 1), ("research", "openai-project-key"): (1, 1),
                       ("ops", "openai-project-key"): (1, 1), ("ops", "email"): (1, 1)}
    by_key = {(r.group, r.type) for r in audit_store.findings(T0, by="key")}
    assert ("rk_2", "email") in by_key
    assert audit_store.findings(T0 + timedelta(seconds=3601)) == [
        audit_store.findings(T0 + timedelta(seconds=3601))[0]]


def test_fingerprints(audit_store: AuditStore) -> None:
    audit_store.write(_mixed())
    rows = audit_store.fingerprints(T0)
    assert [(r.fingerprint, r.events) for r in rows] == [("fp_a", 2), ("fp_b", 2)]
    a = rows[0]
    assert a.teams == ["ops", "research"] and a.keys == ["rk_1", "rk_2"]
    assert a.first_seen == T0 + timedelta(seconds=30) and a.last_seen == T0 + timedelta(seconds=3700)
    assert len(audit_store.fingerprints(T0, limit=1)) == 1
    assert audit_store.fingerprints(T0 + timedelta(hours=3)) == []
