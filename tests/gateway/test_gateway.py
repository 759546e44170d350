"""The gateway end to end: the official openai SDK → redline gateway (uvicorn) → a recording local upstream."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx
import openai
import pytest

from redline.synth import fake_secret
from tests.gateway.conftest import Env

RNG = random.Random(4242)
SECRET = fake_secret("openai-project-key", RNG)
GH = fake_secret("github-pat", RNG)
EMAIL_A = "wei.zhang@qq.com"
EMAIL_B = "wei.zhang@qq.com.cn"  # shares a prefix with EMAIL_A
EMAIL_C = "olivia.smith88@proton.me"
PLANTED = (SECRET, GH, EMAIL_A, EMAIL_B, EMAIL_C)


def chat(env: Env, text: str, model: str = "ds-chat", **kw: Any) -> Any:
    return env.client().chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def streamed(env: Env, text: str, model: str = "ds-chat", **kw: Any) -> tuple[str, list[Any]]:
    chunks = list(env.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True, **kw))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return content, chunks


def assert_never_seen(env: Env, *values: str) -> None:
    seen = env.cloud.seen_text() + env.local.seen_text()
    for v in values:
        assert v not in seen


# ------------------------------------------------------------------------------------------------ basics


def test_models_lists_what_the_key_may_use(env: Env) -> None:
    ids = {m.id for m in env.client().models.list()}
    assert {"ds-chat", "local-llama"} <= ids
    assert "banned-chat" not in ids


def test_missing_or_bad_key_is_401(env: Env) -> None:
    with pytest.raises(openai.AuthenticationError):
        env.client(key="rl-" + "x" * 40).chat.completions.create(
            model="ds-chat", messages=[{"role": "user", "content": "hi"}])
    r = httpx.post(env.server.base_url + "/chat/completions", json={"model": "ds-chat", "messages": []})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_upstream_key_is_used_upstream_and_never_returned(env: Env) -> None:
    env.clear()
    r = chat(env, "hello there")
    assert r.choices[0].message.content == "You said: hello there"
    assert env.cloud.headers[-1]["authorization"] == "Bearer upstream-provider-key-for-tests"
    assert env.key not in json.dumps(env.cloud.headers)
    raw = httpx.post(env.server.base_url + "/chat/completions", headers={"authorization": f"Bearer {env.key}"},
                     json={"model": "ds-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert "upstream-provider-key" not in raw.text + json.dumps(dict(raw.headers))


def test_unknown_model_and_banned_provider(env: Env) -> None:
    with pytest.raises(openai.NotFoundError):
        chat(env, "hi", model="no-such-model")
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(env, "hi", model="banned-chat")
    assert "disabled" in str(exc.value)


def test_malformed_json_and_body_limit(env: Env) -> None:
    h = {"authorization": f"Bearer {env.key}", "content-type": "application/json"}
    r = httpx.post(env.server.base_url + "/chat/completions", headers=h, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    for bad in (b'{"model": "ds-chat", "temperature": NaN, "messages": []}', b'{"model": "ds-chat\\ud800"}',
                b'{"model": "ds-chat", "messages": []}\xff'):
        r = httpx.post(env.server.base_url + "/chat/completions", headers=h, content=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", bad
    big = json.dumps({"model": "ds-chat", "messages": [{"role": "user", "content": "a" * 70_000}]})
    r = httpx.post(env.server.base_url + "/chat/completions", headers=h, content=big)
    assert r.status_code == 413 and set(r.json()["error"]) >= {"message", "type", "code"}
    r = httpx.post(env.server.base_url + "/completions", headers=h,
                   content=json.dumps({"model": "ds-chat", "prompt": [1, 2, 3]}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "uninspectable_input"


# ------------------------------------------------------------------------------------------------ policy


def test_secret_blocked_with_types_never_values(env: Env) -> None:
    env.clear()
    with pytest.raises(openai.BadRequestError) as exc:
        chat(env, f"here is my key {SECRET} please debug")
    msg = str(exc.value)
    assert "openai-project-key" in msg and SECRET not in msg
    assert env.cloud.requests == []


@pytest.mark.parametrize("where", ["system", "assistant_tool_args", "tool_message", "multimodal", "tool_schema"])
def test_every_role_and_part_is_inspected(env: Env, where: str) -> None:
    env.clear()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    tools = None
    if where == "system":
        messages.insert(0, {"role": "system", "content": f"token: {GH}"})
    elif where == "assistant_tool_args":
        messages += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"k": GH})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    elif where == "tool_message":
        messages += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": f"result: {GH}"}]
    elif where == "multimodal":
        messages = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                                 {"type": "text", "text": f"key {GH}"}]}]
    else:
        tools = [{"type": "function", "function": {"name": "f", "description": f"uses {GH}",
                                                   "parameters": {"type": "object", "properties": {}}}}]
    kw: dict[str, Any] = {"tools": tools} if tools else {}
    with pytest.raises(openai.BadRequestError) as exc:
        env.client().chat.completions.create(model="ds-chat", messages=messages, **kw)
    assert "github-pat" in str(exc.value)
    assert env.cloud.requests == []


TEXT = (f"Contact {EMAIL_A} or {EMAIL_B}; cc {EMAIL_C}. Again: {EMAIL_A}, {EMAIL_B}<x> and "
        f"({EMAIL_C}) end")


def test_pseudonymized_non_streamed_exact(env: Env) -> None:
    env.clear()
    r = chat(env, TEXT)
    assert r.choices[0].message.content == "You said: " + TEXT
    assert_never_seen(env, EMAIL_A, EMAIL_B, EMAIL_C)
    sent = env.cloud.requests[-1]["messages"][0]["content"]
    assert "<EMAIL_1>" in sent and "<EMAIL_2>" in sent and "<EMAIL_3>" in sent


@pytest.mark.parametrize("model", ["ds-one", "ds-chat"])
def test_pseudonymized_streamed_exact_with_split_placeholders(env: Env, model: str) -> None:
    env.clear()
    content, chunks = streamed(env, TEXT, model=model)
    assert content == "You said: " + TEXT
    assert_never_seen(env, EMAIL_A, EMAIL_B, EMAIL_C)
    # Only the possible tail is held back: text flows before the stream ends.
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 10


def test_streamed_usage_passed_through_when_asked(env: Env) -> None:
    _, chunks = streamed(env, "count me", stream_options={"include_usage": True})
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    _, chunks = streamed(env, "count me")
    assert all(getattr(c, "usage", None) is None for c in chunks)
    # The gateway asked upstream for usage anyway (for cost accounting).
    assert env.cloud.requests[-1]["stream_options"] == {"include_usage": True}


def test_tool_call_arguments_restored(env: Env) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": f'find "{EMAIL_A}" and {EMAIL_C}'}]
    r = env.client().chat.completions.create(model="ds-chat", messages=msgs, tools=tools)
    args = json.loads(r.choices[0].message.tool_calls[0].function.arguments)
    assert args == {"text": msgs[0]["content"]}
    stream = env.client().chat.completions.create(model="ds-one", messages=msgs, tools=tools,
                                                  stream=True)
    parts = []
    for c in stream:
        for call in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            parts.append(call.function.arguments or "")
    assert json.loads("".join(parts)) == {"text": msgs[0]["content"]}
    assert_never_seen(env, EMAIL_A, EMAIL_C)


def test_reroute_personal_data_to_local(env: Env) -> None:
    env.clear()
    r = chat(env, f"my address is {EMAIL_A}", model="ds-reroute")
    assert r.choices[0].message.content == f"You said: my address is {EMAIL_A}"
    assert env.cloud.requests == []
    assert env.local.requests[-1]["model"] == "echo-5"
    assert EMAIL_A in env.local.seen_text()  # the local model may see it, by policy
    env.clear()
    r = chat(env, "nothing personal", model="ds-reroute")
    assert len(env.cloud.requests) == 1 and env.local.requests == []


def test_completions_and_embeddings(env: Env) -> None:
    env.clear()
    c = env.client().completions.create(model="ds-chat", prompt=f"write to {EMAIL_C}")
    assert c.choices[0].text == f"You said: write to {EMAIL_C}"
    e = env.client().embeddings.create(model="ds-embed", input=[f"about {EMAIL_C}", "other"])
    assert len(e.data) == 2 and len(e.data[0].embedding) == 3
    assert_never_seen(env, EMAIL_C)
    with pytest.raises(openai.BadRequestError):
        env.client().embeddings.create(model="ds-embed", input=f"k={SECRET}")
    assert_never_seen(env, SECRET)


def test_response_secret_redacted(env: Env) -> None:
    env.cloud.leak_text = f"Sure, the key is {GH} and that's it."
    r = chat(env, "what was the key?", model="ds-leak")
    text = r.choices[0].message.content
    assert GH not in text and "[REDACTED:github-pat]" in text and text.endswith("and that's it.")
    content, _ = streamed(env, "again?", model="ds-leak")  # 4-char chunks: the key arrives split
    assert GH not in content and "[REDACTED:github-pat]" in content and content.endswith("and that's it.")


# ------------------------------------------------------------------------------------------------ failures


def test_upstream_failures_are_openai_errors(env: Env) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        chat(env, "hi", model="ds-500")
    assert exc.value.status_code == 502
    with pytest.raises(openai.RateLimitError):
        chat(env, "hi", model="ds-429")
    with pytest.raises(openai.InternalServerError) as exc:
        chat(env, "hi", model="ds-401")
    assert "credentials" in str(exc.value)
    with pytest.raises(openai.InternalServerError) as exc:
        chat(env, "hi", model="ds-reset")
    assert exc.value.status_code == 502
    t = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc2:
        chat(env, "hi", model="ds-stall")
    assert exc2.value.status_code == 504 and time.monotonic() - t < 5


@pytest.mark.parametrize("model", ["ds-cut", "ds-stall"])
def test_streams_cut_midway_end_with_an_error_event(env: Env, model: str) -> None:
    t = time.monotonic()
    with pytest.raises(openai.APIError):
        streamed(env, "a long enough message to stream", model=model)
    assert time.monotonic() - t < 5


def test_client_disconnect_cancels_upstream(env: Env) -> None:
    before = env.cloud.cancelled
    with httpx.stream("POST", env.server.base_url + "/chat/completions", headers={"authorization": f"Bearer {env.key}"},
                      json={"model": "ds-slow", "stream": True, "messages": [{"role": "user", "content": "go"}]},
                      timeout=10) as r:
        it = r.iter_bytes()
        next(it)
        next(it)
    deadline = time.monotonic() + 5
    while env.cloud.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.cloud.cancelled > before


# ------------------------------------------------------------------------------------------------ identity


def test_rate_limit_429_with_retry_after(env: Env) -> None:
    _, key = env.keys.create("research", user="bob", rpm=2)
    client = env.client(key=key)
    for _ in range(2):
        client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": "hi"}])
    assert int(exc.value.response.headers["retry-after"]) >= 1


def test_admin_endpoints_need_admin_key(env: Env) -> None:
    url = env.server.base_url.removesuffix("/v1") + "/admin/keys"
    assert httpx.get(url, headers={"authorization": f"Bearer {env.key}"}).status_code == 403
    r = httpx.get(url, headers={"authorization": f"Bearer {env.admin_key}"})
    assert r.status_code == 200 and any(k["team"] == "research" for k in r.json()["data"])
    assert env.key not in r.text


def test_healthz_and_metrics(env: Env) -> None:
    root = env.server.base_url.removesuffix("/v1")
    assert httpx.get(root + "/healthz").json() == {"status": "ok"}
    m = httpx.get(root + "/metrics").text
    assert "redline_gateway_requests_total" in m


def test_zz_audit_store_holds_no_planted_value(env: Env) -> None:
    """Runs last (name): every request above left an audit event; none holds a planted value."""
    from redline.engine import Scanner
    from tests.gateway.conftest import HERE

    time.sleep(0.3)  # the writer flushes every 50 ms
    events = list(env.audit.events(since=__import__("datetime").datetime(2000, 1, 1)))
    assert len(events) >= 20
    assert any(e.action == "block" for e in events) and any(e.action == "pseudonymize" for e in events)
    assert any(e.action == "reroute" and e.rerouted_from == "cloud" for e in events)
    assert any(e.prompt_tokens > 0 and e.stream for e in events)
    raw = env.db.read_bytes()
    for wal in env.db.parent.glob(env.db.name + "*"):
        raw += wal.read_bytes()
    text = raw.decode("utf-8", "replace")
    for v in PLANTED:
        assert v not in text
    scanner = Scanner(extra_rule_paths=[HERE / "pii_rules.toml"])
    found = {f.type for f in scanner.scan_text(text)}
    assert not found & {"openai-project-key", "github-pat", "email"}, found
