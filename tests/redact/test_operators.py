from __future__ import annotations

import json
from pathlib import Path

import pytest

from redline.engine import Finding, Scanner
from redline.redact import Policy, PolicyError, Vault, redact_text


def F(kind: str, type: str, start: int, end: int) -> Finding:
    return Finding(kind, type, start, end, "high", "0" * 24, "x")  # type: ignore[arg-type]


def test_default_masks_secrets_and_pseudonymises_pii(scanner: Scanner, keys: dict[str, str]) -> None:
    text = f"key={keys['github-pat']} mail=alice@example.com again alice@example.com other bob@example.com"
    a = text.index("alice")
    b = text.index("alice", a + 1)
    c = text.index("bob")
    secrets = [f for f in scanner.scan_text(text) if f.kind == "secret"]
    findings = [*secrets, F("pii", "email", a, a + 17), F("pii", "email", b, b + 17),
                F("pii", "email", c, c + 15)]
    findings.sort(key=lambda f: f.start)
    vault = Vault()
    res = redact_text(text, findings, Policy.default(), vault=vault)
    assert res.text == ("key=[REDACTED:github-pat] mail=<EMAIL_1> again <EMAIL_1> other <EMAIL_2>")
    assert [r.operator for r in res.replacements] == ["mask", "pseudonym", "pseudonym", "pseudonym"]
    assert not res.dropped
    assert all(keys["github-pat"] not in str(r) for r in res.replacements)
    assert vault.restore(res.text) == text.replace(keys["github-pat"], "[REDACTED:github-pat]")


def test_operators_partial_hash_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDLINE_FINGERPRINT_KEY", "k1")
    text = "card 4111111111111111 token abcdef123456"
    card = F("pii", "credit-card", 5, 21)
    tok = F("secret", "generic-api-key", 28, 40)
    pol = Policy.from_dict({"types": {"credit-card": "partial", "generic-api-key": "hash"}})
    res = redact_text(text, [card, tok], pol)
    assert res.text.startswith("card [REDACTED:credit-card:1111] token [HASH:generic-api-key:")
    h1 = res.text.rsplit(":", 1)[1]
    # The same value hashes the same across records, whatever its escaping.
    res2 = redact_text('{"t":"abcdef123456"}', [F("secret", "generic-api-key", 6, 18)], pol)
    assert h1.rstrip("]") in res2.text
    monkeypatch.setenv("REDLINE_FINGERPRINT_KEY", "k2")
    assert redact_text(text, [card, tok], Policy.from_dict(pol_dict := {"types": {"generic-api-key": "hash"}})).text \
        != res.text and pol_dict
    dropped = redact_text(text, [card, tok], Policy.from_dict({"kinds": {"pii": "drop"}}))
    assert dropped.dropped and dropped.text == ""


def test_hash_needs_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REDLINE_FINGERPRINT_KEY", raising=False)
    with pytest.raises(PolicyError, match="REDLINE_FINGERPRINT_KEY"):
        redact_text("x", [F("secret", "t", 0, 1)], Policy.from_dict({"kinds": {"secret": "hash"}}))
    keyfile = tmp_path / "key"
    keyfile.write_text("file-key\n")
    pol = Policy.from_dict({"kinds": {"secret": "hash"}, "hash": {"key_file": str(keyfile)}})
    assert redact_text("xyz", [F("secret", "t", 0, 3)], pol).text.startswith("[HASH:t:")


def test_overlaps_merge_and_never_garble() -> None:
    text = "aaaa SECRETVALUE1234 bbbb"
    f1 = F("secret", "one", 5, 16)
    f2 = F("secret", "two", 10, 20)
    f3 = F("pii", "three", 5, 20)
    res = redact_text(text, [f1, f2], Policy.default())
    assert res.text == "aaaa [REDACTED:one] bbbb" or res.text == "aaaa [REDACTED:two] bbbb"
    res = redact_text(text, [f1, f2, f3], Policy.default())
    assert res.text.count("<") + res.text.count("[") == 1 and res.text.endswith(" bbbb")


def test_json_escapes_stay_valid(scanner: Scanner, keys: dict[str, str]) -> None:
    inner = json.dumps({"auth": keys["openai-project-key"], "note": "é\n\"q\""})
    line = json.dumps({"ts": 1, "body": inner, "k": keys["aws-access-key-id"]})
    findings = scanner.scan_text(line)
    assert findings
    for policy in (Policy.default(), Policy.from_dict({"kinds": {"secret": "partial"}})):
        res = redact_text(line, findings, policy)
        doc = json.loads(res.text)
        assert set(doc) == {"ts", "body", "k"}
        assert json.loads(doc["body"])["note"] == "é\n\"q\""
        assert keys["openai-project-key"] not in res.text and keys["aws-access-key-id"] not in res.text


def test_partial_never_splits_an_escape() -> None:
    line = '{"v":"abcdefghij\\u00e9\\n"}'
    res = redact_text(line, [F("secret", "x", 6, len(line) - 2)], Policy.from_dict({"kinds": {"secret": "partial"}}))
    assert json.loads(res.text)["v"] == "[REDACTED:x:ij\u00e9\n]"


def test_multiline_value_keeps_line_count() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQ\nABCD\n-----END PRIVATE KEY-----"
    text = f"a\n{pem}\nb"
    res = redact_text(text, [F("secret", "private-key", 2, 2 + len(pem))], Policy.default())
    assert res.text.count("\n") == text.count("\n")
    assert res.text.startswith("a\n[REDACTED:private-key]\n")


def test_chat_summary_keeps_json_keys() -> None:
    line = ('{"model":"m","messages":[{"role":"user","content":"my secret plan"},'
            '{"role":"assistant","content":"ok"}],"stream":false}')
    s = line.index('"messages"')
    e = line.index("]") + 1
    res = redact_text(line, [F("chat", "chat-messages-json", s, e)], Policy.from_dict({"kinds": {"chat": "summary"}}))
    doc = json.loads(res.text)
    assert doc == {"model": "m", "messages": "[CHAT: 2 turns, " + doc["messages"].split(", ")[1], "stream": False}
    assert "secret plan" not in res.text
    # Escaped inside a string, one level down.
    outer = json.dumps({"body": line})
    s2, e2 = outer.index('\\"messages'), outer.index("]") + 1
    summary = Policy.from_dict({"kinds": {"chat": "summary"}})
    res = redact_text(outer, [F("chat", "chat-messages-json", s2, e2)], summary)
    body = json.loads(json.loads(res.text)["body"])
    assert body["messages"].startswith("[CHAT: 2 turns") and "secret plan" not in res.text


def test_redacting_twice_changes_nothing(
    scanner: Scanner, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDLINE_FINGERPRINT_KEY", "k")
    text = " ".join(f"{t}={v} git https://{v}@github.com/x" for t, v in keys.items())
    for ops in ({}, {"secret": "partial"}, {"secret": "hash"}, {"secret": "pseudonym"}):
        pol = Policy.from_dict({"kinds": ops})
        once = redact_text(text, scanner.scan_text(text), pol).text
        twice = redact_text(once, scanner.scan_text(once), pol)
        assert twice.text == once and not twice.replacements, ops
        for v in keys.values():
            assert v not in once


def test_markers_are_not_secrets(scanner: Scanner) -> None:
    for marker in ("[REDACTED:openai-project-key]", "<EMAIL_1>", "<OPENAI_PROJECT_KEY_12>",
                   "[CHAT: 3 turns, 412 chars]", "[HASH:github-pat:3f2a9c0d1e2b3c4d5e6f7a8b]",
                   "[REDACTED:credit-card:4242]"):
        for ctx in ("{}", "api_key={}", 'password="{}"', "Authorization: Bearer {}"):
            assert scanner.scan_text(ctx.format(marker)) == [], (ctx, marker)


def test_policy_from_files(tmp_path: Path) -> None:
    t = tmp_path / "p.toml"
    t.write_text('[kinds]\nchat = "summary"\n[types]\ncredit-card = { operator = "partial" }\n'
                 '[mask]\ntemplate = "***{type}***"\n')
    p = Policy.from_file(t)
    assert p.operator_for("chat", "chat-transcript") == "summary"
    assert p.operator_for("pii", "credit-card") == "partial"
    assert p.operator_for("secret", "x") == "mask" and p.mask_template == "***{type}***"
    y = tmp_path / "p.yaml"
    y.write_text("kinds:\n  pii: hash\ntypes:\n  email: drop\npseudonym:\n  scope: run\n")
    p = Policy.from_file(y)
    assert p.operator_for("pii", "phone") == "hash" and p.operator_for("pii", "email") == "drop"
    assert p.pseudonym_scope == "run"


@pytest.mark.parametrize(("body", "needle"), [
    ('[kinds]\nsecret = "maks"\n', "kinds.secret: unknown operator 'maks'"),
    ('[kinds]\nsecrets = "mask"\n', "kinds.secrets: unknown kind"),
    ('colour = 1\n', "colour: unknown key"),
    ('[mask]\ntemplate = "say \\"hi\\""\n', "mask.template: must not contain quotes"),
    ('[mask]\ntemplate = "{value}"\n', "mask.template: bad placeholder"),
    ('[types]\nemail = { operator = "hash", template = "x" }\n', "types.email.template"),
    ('[pseudonym]\nscope = "galaxy"\n', "pseudonym.scope"),
    ("[kinds\n", "invalid TOML"),
])
def test_policy_errors_name_the_key(tmp_path: Path, body: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(PolicyError) as info:
        Policy.from_file(p)
    assert needle in str(info.value) and str(p) in str(info.value)


def test_vault_placeholders_and_restore() -> None:
    v = Vault()
    phs = [v.placeholder(f"user{i}@x.org", "email") for i in range(12)]
    assert phs[0] == "<EMAIL_1>" and phs[9] == "<EMAIL_10>"
    assert v.placeholder("user0@x.org", "email") == "<EMAIL_1>"
    assert v.placeholder("sk-1", "openai-project-key") == "<OPENAI_PROJECT_KEY_1>"
    text = " ".join(phs) + " <EMAIL_99> <b>"
    assert v.restore(text) == " ".join(f"user{i}@x.org" for i in range(12)) + " <EMAIL_99> <b>"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_stream_restorer_handles_split_placeholders(size: int) -> None:
    v = Vault()
    a, b = v.placeholder("alice@example.com", "email"), v.placeholder("bob@example.com", "email")
    for _ in range(10):
        v.placeholder(f"x{_}@y.z", "email")
    text = f"Hi {a}, cc {b} and <EMAIL_10> but not <EMAIL_> or <b> or a < b; end {a}"
    r = v.stream_restorer()
    out = []
    for i in range(0, len(text), size):
        piece = r.feed(text[i:i + size])
        out.append(piece)
        assert len(r._pending) <= v.max_len
    out.append(r.flush())
    assert "".join(out) == v.restore(text)
    assert "alice@example.com" in "".join(out)
