"""Deterministic generator of labelled synthetic logs with planted, generated-fake values.

Every secret and personal value this module produces is made up from a seeded ``random.Random``:
none of them is real, and checksummed ones (GitHub tokens, card numbers, IBANs, national ids,
phone numbers) are generated so that their checksums really hold, to exercise validators.

A :class:`LabelledLine` is one log *record*. Most records are one physical line; a few (Java stack
traces, PEM keys written raw, multi-line transcripts) contain ``\\n``. Planted offsets are character
offsets into ``LabelledLine.text`` (end exclusive), and ``text[start:end] == value`` always holds:
for a value inside a JSON string the value is the escaped form as it appears in the text.

Kinds: ``secret`` and ``pii`` spans cover the value only (for ``password=hunter2`` just ``hunter2``;
for a DB URL just its password). ``chat`` spans cover a JSON ``messages`` array (``chat-messages``), an
LLM response's content array (``chat-response``) or a ``User: ... Assistant: ...`` block
(``chat-transcript``), and may contain secret/PII spans.

Command line::

    python -m redline.synth --sample [OUT]          # regenerate the bundled log_stream sample
    python -m redline.synth --log OUT --size 100MB  # write a large realistic log file
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import string
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stdnum import luhn, verhoeff

__all__ = [
    "PII_TYPES",
    "SECRET_TYPES",
    "LabelledLine",
    "Planted",
    "fake_pii",
    "fake_secret",
    "generate_lines",
    "log_stream_rows",
    "main",
    "write_log",
]


@dataclass(frozen=True)
class Planted:
    """A planted value: ``text[start:end] == value``."""

    start: int
    end: int
    kind: str
    type: str
    value: str


@dataclass(frozen=True)
class LabelledLine:
    """One generated log record and the values planted in it."""

    text: str
    planted: tuple[Planted, ...]


SECRET_TYPES: tuple[str, ...] = (
    "openai-project-key",
    "openai-legacy-key",
    "anthropic-api-key",
    "deepseek-api-key",
    "aws-access-key-id",
    "aws-secret-access-key",
    "github-pat",
    "gitlab-pat",
    "slack-bot-token",
    "stripe-secret-key",
    "google-api-key",
    "huggingface-token",
    "sendgrid-api-key",
    "telegram-bot-token",
    "jwt",
    "private-key",
    "db-url-password",
    "password-assignment",
)

PII_TYPES: tuple[str, ...] = (
    "email",
    "phone",
    "credit-card",
    "iban",
    "us-ssn",
    "cn-ric",
    "uk-nino",
    "in-aadhaar",
)

CHAT_TYPES: tuple[str, ...] = ("chat-messages", "chat-response", "chat-transcript")

# --------------------------------------------------------------------------------------------------
# character sets and small helpers

_DIGITS = string.digits
_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase
_ALNUM = _DIGITS + _UPPER + _LOWER
_BASE62 = _DIGITS + _UPPER + _LOWER  # 0-9A-Za-z, the order GitHub's checksum uses
_URLSAFE = _ALNUM + "-_"
_HEX = "0123456789abcdef"
_B32 = _UPPER + "234567"
_B64 = _UPPER + _LOWER + _DIGITS + "+/"

_FORBIDDEN = ("example", "xxxx")


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _clean(value: str) -> bool:
    low = value.lower()
    return not any(bad in low for bad in _FORBIDDEN)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _base62(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = _BASE62[r] + out
    return out.rjust(width, "0")


def github_checksum(body: str) -> str:
    """Base62 (0-9A-Za-z) of zlib.crc32 of ``body``, left-padded with '0' to 6 characters."""
    return _base62(zlib.crc32(body.encode("ascii")) & 0xFFFFFFFF, 6)


def luhn_valid(number: str) -> bool:
    digits = "".join(c for c in number if c.isdigit())
    return len(digits) > 1 and bool(luhn.is_valid(digits))


def _luhn_complete(prefix: str) -> str:
    return prefix + str(luhn.calc_check_digit(prefix))


_NINO_BAD_FIRST = set("DFIQUV")
_NINO_BAD_SECOND = set("DFIOQUV")
_NINO_BAD_PREFIX = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def nino_valid(value: str) -> bool:
    """UK National Insurance number rules (HMRC NIM39110); python-stdnum has no gb.nino module."""
    v = value.replace(" ", "").upper()
    if len(v) != 9 or not v[:2].isalpha() or not v[2:8].isdigit() or v[8] not in "ABCD":
        return False
    if v[0] in _NINO_BAD_FIRST or v[1] in _NINO_BAD_SECOND or v[:2] in _NINO_BAD_PREFIX:
        return False
    return v != "QQ123456C"


# --------------------------------------------------------------------------------------------------
# fake secrets

_WORDS = (
    "sunset",
    "falcon",
    "maple",
    "copper",
    "orbit",
    "willow",
    "granite",
    "harbor",
    "ember",
    "quartz",
    "tiger",
    "violet",
    "canyon",
    "meadow",
    "rocket",
    "saffron",
    "thunder",
    "cobalt",
    "juniper",
    "pixel",
)

_PEM_HEADS = (
    ("RSA PRIVATE KEY", b"\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00", 1190),
    ("PRIVATE KEY", b"\x30\x82\x04\xbe\x02\x01\x00\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01", 1218),
    ("EC PRIVATE KEY", b"\x30\x77\x02\x01\x01\x04\x20", 121),
    ("OPENSSH PRIVATE KEY", b"openssh-key-v1\x00\x00\x00\x00\x04none", 400),
)


def _pem(rng: random.Random) -> str:
    label, head, size = rng.choice(_PEM_HEADS)
    body = head + bytes(rng.getrandbits(8) for _ in range(size - len(head)))
    b64 = base64.b64encode(body).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"


def _jwt(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    iat = 1735689600 + rng.randrange(0, 90 * 86400)
    payload: dict[str, object] = {
        "sub": str(rng.randrange(10**6, 10**9)),
        "iat": iat,
        "exp": iat + rng.choice([900, 3600, 86400]),
        "scope": rng.choice(["chat:write", "api", "read write", "admin"]),
    }
    if rng.random() < 0.5:
        payload["iss"] = rng.choice(["auth.internal", "https://login.corp.local", "gateway"])
    sig_len = 43 if header["alg"] == "HS256" else rng.choice([86, 342])
    return ".".join(
        [
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(payload, separators=(",", ":")).encode()),
            _rand(rng, _URLSAFE, sig_len),
        ]
    )


def _password(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return rng.choice(_WORDS) + str(rng.randrange(10, 9999)) + rng.choice("!$%*.-_")
    if style == 1:
        return _rand(rng, _ALNUM, rng.randrange(12, 20))
    w = rng.choice(_WORDS)
    return w[0].upper() + w[1:] + rng.choice("!$*-") + _rand(rng, _ALNUM, 6)


def _fake_secret_once(type: str, rng: random.Random) -> str:
    if type == "openai-project-key":
        return "sk-proj-" + _rand(rng, _URLSAFE, 74) + "T3BlbkFJ" + _rand(rng, _URLSAFE, 74)
    if type == "openai-legacy-key":
        return "sk-" + _rand(rng, _ALNUM, 20) + "T3BlbkFJ" + _rand(rng, _ALNUM, 20)
    if type == "anthropic-api-key":
        return "sk-ant-api03-" + _rand(rng, _URLSAFE, 93) + "AA"
    if type == "deepseek-api-key":
        return "sk-" + _rand(rng, _HEX, 32)
    if type == "aws-access-key-id":
        return rng.choice(["AKIA", "AKIA", "ASIA"]) + _rand(rng, _B32, 16)
    if type == "aws-secret-access-key":
        return _rand(rng, _ALNUM + "/+", 40)
    if type == "github-pat":
        body = _rand(rng, _BASE62, 30)
        return "ghp_" + body + github_checksum(body)
    if type == "gitlab-pat":
        return "glpat-" + _rand(rng, _URLSAFE, 20)
    if type == "slack-bot-token":
        return f"xoxb-{rng.randrange(10**10, 10**12)}-{rng.randrange(10**12, 10**13)}-{_rand(rng, _ALNUM, 24)}"
    if type == "stripe-secret-key":
        return "sk_live_" + _rand(rng, _ALNUM, rng.choice([24, 99]))
    if type == "google-api-key":
        return "AIza" + _rand(rng, _URLSAFE, 35)
    if type == "huggingface-token":
        return "hf_" + _rand(rng, _UPPER + _LOWER, 34)
    if type == "sendgrid-api-key":
        return "SG." + _rand(rng, _URLSAFE, 22) + "." + _rand(rng, _URLSAFE, 43)
    if type == "telegram-bot-token":
        return f"{rng.randrange(10**8, 10**10)}:AA{_rand(rng, _URLSAFE, 33)}"
    if type == "jwt":
        return _jwt(rng)
    if type == "private-key":
        return _pem(rng)
    if type in ("db-url-password", "password-assignment"):
        return _password(rng)
    raise ValueError(f"unknown secret type {type!r}")


def _distinct(value: str) -> bool:
    # no long run of one character (placeholder-like)
    run = 1
    for a, b in itertools.pairwise(value):
        run = run + 1 if a == b else 1
        if run >= 4:
            return False
    return True


def fake_secret(type: str, rng: random.Random) -> str:
    """A generated fake secret of rule type ``type`` (one of SECRET_TYPES)."""
    while True:
        value = _fake_secret_once(type, rng)
        if _clean(value) and (type == "private-key" or _distinct(value)):
            return value


# --------------------------------------------------------------------------------------------------
# fake personal data

_FIRST = (
    "wei",
    "li",
    "james",
    "olivia",
    "arjun",
    "priya",
    "mohammed",
    "sofia",
    "lucas",
    "emma",
    "hiroshi",
    "anna",
    "chen",
    "fatima",
    "noah",
    "zoe",
    "raj",
    "mei",
    "oliver",
    "amelia",
)
_LAST = (
    "zhang",
    "wang",
    "smith",
    "patel",
    "garcia",
    "mueller",
    "kumar",
    "li",
    "brown",
    "nguyen",
    "chen",
    "jones",
    "singh",
    "rossi",
    "kim",
    "taylor",
    "liu",
    "wilson",
    "sharma",
    "yang",
)
_MAIL_DOMAINS = (
    "gmail.com",
    "qq.com",
    "163.com",
    "outlook.com",
    "yahoo.co.uk",
    "proton.me",
    "icloud.com",
    "fastmail.fm",
    "acmecorp.io",
    "hotmail.com",
    "126.com",
    "mail.ru",
)
_CN_REGIONS = (
    "110101",
    "110105",
    "310104",
    "310115",
    "440305",
    "440106",
    "330106",
    "510107",
    "320102",
    "420106",
    "500103",
    "610113",
)
_CN_MOBILE_PREFIX = (
    "130",
    "131",
    "132",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "158",
    "159",
    "176",
    "177",
    "180",
    "186",
    "187",
    "188",
    "189",
    "199",
)
_US_AREA = ("212", "213", "312", "415", "617", "646", "702", "713", "206", "303", "404", "512")


def _phone(rng: random.Random) -> str:
    style = rng.randrange(6)
    if style < 3:
        p = rng.choice(_CN_MOBILE_PREFIX)
        a, b = _rand(rng, _DIGITS, 4), _rand(rng, _DIGITS, 4)
        return (f"+86 {p} {a} {b}", f"+86{p}{a}{b}", f"+86-{p}-{a}-{b}")[style]
    if style == 3:
        return f"+44 7{rng.choice('3456789')}{_rand(rng, _DIGITS, 2)} {_rand(rng, _DIGITS, 6)}"
    area = rng.choice(_US_AREA)
    ex = str(rng.randrange(2, 10)) + _rand(rng, _DIGITS, 2)
    sub = _rand(rng, _DIGITS, 4)
    return f"+1 ({area}) {ex}-{sub}" if style == 4 else f"+1-{area}-{ex}-{sub}"


def _card(rng: random.Random) -> str:
    brand = rng.randrange(4)
    if brand == 0:
        digits = _luhn_complete("4" + _rand(rng, _DIGITS, 14))
    elif brand == 1:
        digits = _luhn_complete(str(rng.randrange(51, 56)) + _rand(rng, _DIGITS, 13))
    elif brand == 2:
        digits = _luhn_complete(rng.choice(["34", "37"]) + _rand(rng, _DIGITS, 12))
        sep = rng.choice([" ", "-", ""])
        return sep.join([digits[:4], digits[4:10], digits[10:]])
    else:
        digits = _luhn_complete("62" + _rand(rng, _DIGITS, 13))
    sep = rng.choice([" ", "-", "", ""])
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


def _iban_check(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    num = "".join(str(int(c, 36)) for c in rearranged)
    return f"{98 - int(num) % 97:02d}"


def _iban(rng: random.Random) -> str:
    country = rng.choice(["DE", "GB", "NL", "FR", "ES", "IT"])
    if country == "DE":
        bban = _rand(rng, _DIGITS, 18)
    elif country == "GB":
        bban = rng.choice(["NWBK", "BARC", "HBUK", "LOYD", "MIDL"]) + _rand(rng, _DIGITS, 14)
    elif country == "NL":
        bban = rng.choice(["ABNA", "INGB", "RABO", "TRIO"]) + _rand(rng, _DIGITS, 10)
    elif country == "FR":
        bban = _rand(rng, _DIGITS, 10) + _rand(rng, _DIGITS, 11)
        bban += f"{97 - (int(bban[:5]) * 89 + int(bban[5:10]) * 15 + int(bban[10:]) * 3) % 97:02d}"
    elif country == "ES":
        bank, branch, account = _rand(rng, _DIGITS, 4), _rand(rng, _DIGITS, 4), _rand(rng, _DIGITS, 10)
        weights = (1, 2, 4, 8, 5, 10, 9, 7, 3, 6)

        def es_check(digits: str) -> str:
            v = 11 - sum(int(d) * w for d, w in zip(digits.rjust(10, "0"), weights, strict=True)) % 11
            return "0" if v == 11 else "1" if v == 10 else str(v)

        bban = bank + branch + es_check("00" + bank + branch) + es_check(account) + account
    else:
        body = _rand(rng, _DIGITS, 5) + _rand(rng, _DIGITS, 5) + _rand(rng, _DIGITS, 12)
        odd = (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23)
        total = 0
        for i, c in enumerate(body):
            n = int(c)
            total += odd[n] if i % 2 == 0 else n
        bban = _UPPER[total % 26] + body
    iban = country + _iban_check(country, bban) + bban
    if rng.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def _ssn(rng: random.Random) -> str:
    area = rng.randrange(1, 900)
    if area == 666:
        area = 667
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


_RIC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _ric(rng: random.Random) -> str:
    birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    body = rng.choice(_CN_REGIONS) + birth.strftime("%Y%m%d") + _rand(rng, _DIGITS, 3)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, _RIC_WEIGHTS, strict=True)) % 11]
    return body + check


def _nino(rng: random.Random) -> str:
    while True:
        prefix = rng.choice("ABCEGHJKLMNPRSTWXYZ") + rng.choice("ABCEGHJKLMNPRSTWXYZ")
        digits = _rand(rng, _DIGITS, 6)
        value = prefix + digits + rng.choice("ABCD")
        if nino_valid(value):
            if rng.random() < 0.5:
                return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {value[-1]}"
            return value


def _aadhaar(rng: random.Random) -> str:
    while True:
        body = str(rng.randrange(2, 10)) + _rand(rng, _DIGITS, 10)
        value = body + str(verhoeff.calc_check_digit(body))
        if value != value[::-1]:
            return rng.choice([f"{value[:4]} {value[4:8]} {value[8:]}", value])


def _email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first}{last}{rng.randrange(1, 99)}",
            f"{first[0]}{last}",
            f"{first}_{last}",
            f"{last}{rng.randrange(1970, 2005)}",
        ]
    )
    return local + "@" + rng.choice(_MAIL_DOMAINS)


def fake_pii(type: str, rng: random.Random) -> str:
    """A generated fake personal value of type ``type`` (one of PII_TYPES), valid for its checksum."""
    makers: dict[str, Callable[[random.Random], str]] = {
        "email": _email,
        "phone": _phone,
        "credit-card": _card,
        "iban": _iban,
        "us-ssn": _ssn,
        "cn-ric": _ric,
        "uk-nino": _nino,
        "in-aadhaar": _aadhaar,
    }
    if type not in makers:
        raise ValueError(f"unknown pii type {type!r}")
    while True:
        value = makers[type](rng)
        if _clean(value) and _pii_valid(type, value):
            return value


def _pii_valid(type: str, value: str) -> bool:
    """Validate with python-stdnum / phonenumbers when installed (they are runtime deps of redline)."""
    try:
        if type == "phone":
            import phonenumbers

            return bool(phonenumbers.is_valid_number(phonenumbers.parse(value, None)))
        if type == "iban":
            from stdnum import iban

            return bool(iban.is_valid(value))
        if type == "us-ssn":
            from stdnum.us import ssn

            return bool(ssn.is_valid(value))
        if type == "cn-ric":
            from stdnum.cn import ric

            return bool(ric.is_valid(value))
        if type == "in-aadhaar":
            from stdnum.in_ import aadhaar

            return bool(aadhaar.is_valid(value))
    except ImportError:  # pragma: no cover - validators are optional here
        return True
    if type == "credit-card":
        return luhn_valid(value)
    if type == "uk-nino":
        return nino_valid(value)
    return True


# --------------------------------------------------------------------------------------------------
# pieces: a tiny markup that renders to text plus planted offsets
#
# A piece is a str (literal text), an _Esc (its contents JSON-string-escaped once more, for values
# inside JSON strings and nested JSON bodies) or a _Span (a labelled region).


@dataclass(frozen=True)
class _Esc:
    parts: tuple[Piece, ...]


@dataclass(frozen=True)
class _Span:
    parts: tuple[Piece, ...]
    kind: str
    type: str


Piece = str | _Esc | _Span


def esc(*parts: Piece) -> _Esc:
    return _Esc(tuple(parts))


def span(kind: str, type: str, *parts: Piece) -> _Span:
    return _Span(tuple(parts), kind, type)


def _escape(s: str, depth: int) -> str:
    for _ in range(depth):
        s = json.dumps(s, ensure_ascii=False)[1:-1]
    return s


def _render(parts: Sequence[Piece]) -> LabelledLine:
    out: list[str] = []
    planted: list[Planted] = []
    pos = 0

    def walk(items: Sequence[Piece], depth: int) -> None:
        nonlocal pos
        for item in items:
            if isinstance(item, str):
                s = _escape(item, depth)
                out.append(s)
                pos += len(s)
            elif isinstance(item, _Esc):
                walk(item.parts, depth + 1)
            else:
                start = pos
                mark = len(out)
                walk(item.parts, depth)
                value = "".join(out[mark:])
                planted.append(Planted(start, pos, item.kind, item.type, value))

    walk(parts, 0)
    planted.sort(key=lambda p: (p.start, -p.end))
    return LabelledLine("".join(out), tuple(planted))


# --------------------------------------------------------------------------------------------------
# vocabulary for realistic lines

_HOSTS = ("api-gw-7f9c", "chat-svc-2", "inference-04", "billing-1", "auth-3", "log-shipper-9")
_INTERNAL = (
    "ch-log-01.internal",
    "pg-primary.db.svc.cluster.local",
    "redis-0.cache.internal",
    "10.12.4.17",
    "kafka-2.mq.internal",
    "mysql-ro.db.internal",
    "oss-bucket.internal",
)
_PATHS = (
    "/v1/chat/completions",
    "/v1/models",
    "/api/v0/chat/history",
    "/healthz",
    "/metrics",
    "/v1/embeddings",
    "/static/app.3f9a1c.js",
    "/login",
    "/api/v0/users/me",
    "/favicon.ico",
    "/v1/messages",
    "/api/v0/files/upload",
)
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
    "python-requests/2.32.3",
    "openai-python/1.59.3",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "kube-probe/1.29",
    "Go-http-client/1.1",
)
_MODELS = (
    "deepseek-chat",
    "deepseek-reasoner",
    "gpt-4o-mini",
    "gpt-4o",
    "claude-3-5-sonnet-20241022",
    "deepseek-coder",
)
_PY_LOGGERS = (
    "app.api.chat",
    "app.worker",
    "uvicorn.access",
    "celery.worker",
    "app.billing",
    "sqlalchemy.engine",
    "app.auth",
)
_JAVA_CLASSES = (
    "c.d.gateway.filter.AuthFilter",
    "c.d.chat.service.ChatService",
    "o.s.web.servlet.DispatcherServlet",
    "c.d.billing.InvoiceJob",
    "c.z.hikari.HikariPool",
)
_USER_PROMPTS_EN = (
    "Can you help me write a Python function that merges two sorted lists?",
    "Summarize this meeting transcript in three bullet points.",
    "Why does my Docker container exit immediately after start?",
    "Translate 'the invoice is overdue' into French and German.",
    "Explain the difference between TCP and UDP like I'm five.",
    "My deploy is failing with a 401 from the API, what should I check?",
    "Write a SQL query that returns the top 5 customers by revenue.",
    "Draft a polite email asking my landlord to fix the heating.",
)
_USER_PROMPTS_ZH = (
    "帮我写一个快速排序的Python实现",
    "请把这段话翻译成英文：我们下周一开会讨论预算。",
    "为什么我的API调用总是返回401错误？",
    "给我讲讲量子计算的基本原理",
    "帮我润色一下这封求职信",
)
_ASSISTANT = (
    "Sure! Here is a concise version:\n\n1. Define the inputs.\n2. Iterate with two pointers.",
    "A 401 means the request was not authenticated. Check that the key is set and not expired.",
    "Here's a query: SELECT customer_id, SUM(amount) AS revenue FROM orders GROUP BY 1 ORDER BY 2 DESC LIMIT 5;",
    "好的，下面是实现代码：\n```python\ndef quicksort(a):\n    ...\n```",
    "TCP is like a phone call: you connect first and everything arrives in order. UDP is like sending postcards.",
    "当然可以。量子计算利用叠加和纠缠来并行处理信息。",
)
_SYSTEM = (
    "You are a helpful assistant.",
    "You are DeepSeek Chat, a helpful AI assistant.",
    "Answer concisely.",
    "你是一个乐于助人的助手。",
)


class _Gen:
    """Line factory. ``ts_placeholders`` makes timestamps into ``\\x00F\\x00`` markers (for write_log)."""

    def __init__(self, rng: random.Random, *, ts_placeholders: bool = False) -> None:
        self.rng = rng
        self.t = datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC) + timedelta(seconds=rng.randrange(86400))
        self.ts_placeholders = ts_placeholders

    # ---- small field makers
    def tick(self) -> None:
        self.t += timedelta(milliseconds=self.rng.randrange(1, 400))

    def ts(self, fmt: str = "iso") -> str:
        self.tick()
        if self.ts_placeholders:
            return f"\x00{fmt}\x00"
        return format_ts(self.t, fmt)

    def ip(self) -> str:
        r = self.rng
        return f"{r.choice([10, 172, 192, 47, 114, 223])}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"

    def uuid(self) -> str:
        h = _rand(self.rng, _HEX, 32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{self.rng.choice('89ab')}{h[17:20]}-{h[20:]}"

    def hexid(self, n: int) -> str:
        return _rand(self.rng, _HEX, n)

    def pick(self, seq: Sequence[str]) -> str:
        return self.rng.choice(seq)

    def chat_turns(self, extra: Sequence[Piece] = ()) -> list[tuple[str, list[Piece]]]:
        """(role, content pieces) turns; ``extra`` is put into one user turn."""
        r = self.rng
        turns: list[tuple[str, list[Piece]]] = []
        if r.random() < 0.6:
            turns.append(("system", [r.choice(_SYSTEM)]))
        n = r.choice([1, 1, 2, 3])
        for i in range(n):
            prompt = r.choice(_USER_PROMPTS_ZH if r.random() < 0.35 else _USER_PROMPTS_EN)
            user: list[Piece] = [prompt]
            if extra and i == n - 1:
                user = [prompt, " ", *extra]
            turns.append(("user", user))
            if i < n - 1 or r.random() < 0.5 or len(turns) < 2:
                turns.append(("assistant", [r.choice(_ASSISTANT)]))
        return turns

    def messages_json(self, extra: Sequence[Piece] = ()) -> _Span:
        """A JSON messages array (as JSON syntax at the current level), labelled as chat."""
        parts: list[Piece] = ["["]
        for i, (role, content) in enumerate(self.chat_turns(extra)):
            if i:
                parts.append(",")
            parts += ['{"role":"', role, '","content":"', esc(*content), '"}']
        parts.append("]")
        return span("chat", "chat-messages", *parts)


def format_ts(t: datetime, fmt: str) -> str:
    if fmt == "iso":
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if fmt == "py":
        return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{t.microsecond // 1000:03d}"
    if fmt == "nginx":
        return t.strftime("%d/%b/%Y:%H:%M:%S +0000")
    if fmt == "ms":
        return str(int(t.timestamp() * 1000))
    if fmt == "s":
        return str(int(t.timestamp()))
    if fmt == "k8s":
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ValueError(fmt)


# --------------------------------------------------------------------------------------------------
# planted fragments: plain-text pieces that put a value in a natural context


def _frag_secret(g: _Gen, type: str) -> list[Piece]:
    r = g.rng
    v = fake_secret(type, r)

    def s(value: str = v, t: str = type) -> _Span:
        return span("secret", t, value)

    if type in ("openai-project-key", "openai-legacy-key"):
        return r.choice([["OPENAI_API_KEY=", s()], ["Authorization: Bearer ", s()], ["openai api_key='", s(), "'"]])
    if type == "anthropic-api-key":
        return r.choice([["x-api-key: ", s()], ["ANTHROPIC_API_KEY=", s()]])
    if type == "deepseek-api-key":
        return r.choice(
            [["DEEPSEEK_API_KEY=", s()], ["deepseek upstream auth=Bearer ", s()], ["provider=deepseek api_key=", s()]]
        )
    if type == "aws-access-key-id":
        if r.random() < 0.5:
            secret = fake_secret("aws-secret-access-key", r)
            return ["aws_access_key_id=", s(), " aws_secret_access_key=", s(secret, "aws-secret-access-key")]
        return ["AWS_ACCESS_KEY_ID=", s()]
    if type == "aws-secret-access-key":
        return ["AWS_SECRET_ACCESS_KEY=", s()]
    if type == "github-pat":
        return r.choice([["GITHUB_TOKEN=", s()], ["git remote https://", s(), "@github.com/acme/infra.git"]])
    if type == "gitlab-pat":
        return ["PRIVATE-TOKEN: ", s()]
    if type == "slack-bot-token":
        return ["slack notifier token=", s()]
    if type == "stripe-secret-key":
        return ["stripe.api_key=", s()]
    if type == "google-api-key":
        return ["maps key=", s()]
    if type == "huggingface-token":
        return ["HF_TOKEN=", s()]
    if type == "sendgrid-api-key":
        return ["SENDGRID_API_KEY=", s()]
    if type == "telegram-bot-token":
        return ["telegram bot api https://api.telegram.org/bot", s(), "/sendMessage"]
    if type == "jwt":
        return r.choice([["Authorization: Bearer ", s()], ["session jwt=", s()]])
    if type == "private-key":
        return ["tls private key loaded: ", s()]
    if type == "db-url-password":
        scheme, user, port = r.choice(
            [
                ("postgres", "app", 5432),
                ("mysql", "root", 3306),
                ("clickhouse", "default", 9000),
                ("redis", "", 6379),
                ("mongodb", "svc_chat", 27017),
            ]
        )
        host = r.choice(_INTERNAL)
        return [f"dsn={scheme}://{user}:", s(), f"@{host}:{port}/{r.choice(['chat', 'prod', 'logs', '0'])}"]
    if type == "password-assignment":
        return r.choice([["password=", s()], ["db_password: ", s()], ["PASSWORD=", s()], ["passwd=", s()]])
    raise ValueError(type)


def _frag_pii(g: _Gen, type: str) -> list[Piece]:
    r = g.rng
    v = fake_pii(type, r)
    sp = span("pii", type, v)
    label = {
        "email": r.choice(["email=", "user ", "contact: ", "to="]),
        "phone": r.choice(["phone=", "mobile: ", "sms sent to ", "tel "]),
        "credit-card": r.choice(["card_number=", "pan=", "card "]),
        "iban": r.choice(["iban=", "payout account ", "IBAN: "]),
        "us-ssn": r.choice(["ssn=", "SSN: "]),
        "cn-ric": r.choice(["id_card=", "身份证号 ", "ric="]),
        "uk-nino": r.choice(["nino=", "NI number "]),
        "in-aadhaar": r.choice(["aadhaar=", "Aadhaar: "]),
    }[type]
    return [label, sp]


def _frag(g: _Gen) -> list[Piece]:
    r = g.rng
    if r.random() < 0.6:
        return _frag_secret(g, r.choice(SECRET_TYPES[:-2] + SECRET_TYPES[-2:] * 2))
    return _frag_pii(g, r.choice(PII_TYPES))


def _is_multiline(frag: Sequence[Piece]) -> bool:
    return any(isinstance(p, _Span) and p.type == "private-key" for p in frag)


# --------------------------------------------------------------------------------------------------
# line styles: each takes an optional fragment (plain-text pieces) to embed


def _nginx(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    path = g.pick(_PATHS)
    query = ""
    if r.random() < 0.3:
        query = f"?page={r.randrange(1, 40)}&limit={r.choice([20, 50, 100])}"
    status = r.choice([200, 200, 200, 201, 204, 301, 400, 401, 404, 429, 499, 502])
    head: list[Piece] = [
        f'{g.ip()} - - [{g.ts("nginx")}] "{r.choice(["GET", "POST", "GET", "PUT"])} {path}{query} HTTP/1.1" '
        f'{status} {r.randrange(0, 80000)} "-" "{g.pick(_AGENTS)}" {r.randrange(1, 3000) / 1000:.3f}'
    ]
    if frag is not None:
        head += [' "', *frag, '"']
    return head


def _python(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    level = r.choice(["INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR"])
    msgs = [
        f"request_id={g.uuid()} user_id={r.randrange(10**5, 10**8)} latency_ms={r.randrange(3, 9000)}",
        f"completion finished model={g.pick(_MODELS)} prompt_tokens={r.randrange(10, 4000)} "
        f"completion_tokens={r.randrange(1, 2000)}",
        f"Task app.tasks.summarize[{g.uuid()}] succeeded in {r.random() * 4:.4f}s",
        f"cache miss key=conv:{r.randrange(10**6, 10**9)} ttl=3600",
        f'"POST /v1/chat/completions HTTP/1.1" {r.choice([200, 429, 500])}',
        f"retrying upstream call attempt={r.randrange(1, 4)} backoff={r.choice([0.5, 1, 2])}s",
    ]
    base: list[Piece] = [f"{g.ts('py')} {level} [{g.pick(_PY_LOGGERS)}] pid={r.randrange(100, 60000)} "]
    if frag is None:
        return [*base, r.choice(msgs)]
    return [*base, r.choice(["loaded settings: ", "config ", "debug dump ", "auth header "]), *frag]


def _java(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    level = r.choice(["INFO", "INFO", "WARN", "ERROR", "DEBUG"])
    thread = r.choice(["main", "http-nio-8080-exec-3", "pool-2-thread-1"])
    head = f"{g.ts('py').replace(',', '.')} {level:5} [{thread}] {g.pick(_JAVA_CLASSES)} - "
    if frag is not None:
        return [head, "resolved properties ", *frag]
    if level == "ERROR" and r.random() < 0.5:
        return [
            head + "Request processing failed\n"
            "java.lang.IllegalStateException: upstream returned 503\n"
            "\tat com.deepchat.gateway.UpstreamClient.call(UpstreamClient.java:"
            + str(r.randrange(40, 400))
            + ")\n\tat com.deepchat.gateway.ChatController.complete(ChatController.java:88)\n"
            "\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)\n"
            "\t... 42 common frames omitted"
        ]
    msgs = [
        f"HikariPool-1 - Connection {r.randrange(10**6)} added, active={r.randrange(1, 20)} idle={r.randrange(0, 10)}",
        f"Completed 200 OK in {r.randrange(2, 900)}ms traceId={g.hexid(32)} spanId={g.hexid(16)}",
        f"Invoice batch {r.randrange(1000, 9999)} processed rows={r.randrange(1, 5000)}",
        f"GC pause (G1 Evacuation Pause) {r.random() * 50:.2f}ms heap={r.randrange(200, 4000)}M",
    ]
    return [head + r.choice(msgs)]


def _gateway_json(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    route = r.choice(["/v1/chat/completions", "/v1/messages", "/v1/embeddings"])
    model = g.pick(_MODELS)
    body: list[Piece]
    if route == "/v1/embeddings":
        body = ['{"model":"text-embedding-3-small","input":"', esc(r.choice(_USER_PROMPTS_EN)), '"}']
    elif frag is not None and r.random() < 0.5:
        body = ['{"model":"', model, '","messages":', g.messages_json(frag), ',"stream":true}']
        frag = None
    else:
        body = ['{"model":"', model, '","messages":', g.messages_json(), f',"temperature":{r.choice([0, 0.7, 1])}}}']
    parts: list[Piece] = [
        f'{{"ts":"{g.ts("iso")}","level":"info","svc":"api-gateway","req_id":"{g.uuid()}",'
        f'"method":"POST","route":"{route}","status":{r.choice([200, 200, 400, 429])},'
        f'"latency_ms":{r.randrange(40, 30000)},"client_ip":"{g.ip()}",'
    ]
    if frag is not None:
        first = frag[0] if isinstance(frag[0], str) else ""
        if first.startswith(("Authorization: ", "x-api-key: ", "PRIVATE-TOKEN: ")):
            name, _, rest = first.partition(": ")
            parts += [f'"headers":{{"{name.lower()}":"', esc(rest, *frag[1:]), '"},']
        else:
            parts += ['"detail":"', esc(*frag), '",']
    parts += ['"body":"', esc(*body), '"}']
    return parts


def _llm_record(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    flavor = r.randrange(3)
    usage = f'"usage":{{"prompt_tokens":{r.randrange(10, 3000)},"completion_tokens":{r.randrange(1, 1500)}}}'
    if flavor == 0:  # OpenAI / DeepSeek chat completions request + response
        return [
            f'{{"id":"chatcmpl-{g.uuid()}","created":{g.ts("s")},"model":"{r.choice(_MODELS[:4])}",'
            '"request":{"messages":',
            g.messages_json(frag or ()),
            '},"choices":',
            span(
                "chat",
                "chat-response",
                '[{"index":0,"message":{"role":"assistant","content":"',
                esc(r.choice(_ASSISTANT)),
                '"},"finish_reason":"stop"}]',
            ),
            f",{usage}}}",
        ]
    if flavor == 1:  # Anthropic messages
        return [
            f'{{"type":"message","id":"msg_{_rand(r, _ALNUM, 24)}","model":"claude-3-5-sonnet-20241022",'
            f'"logged_at":"{g.ts("iso")}","system":"',
            esc(r.choice(_SYSTEM)),
            '","messages":',
            g.messages_json(frag or ()),
            ',"content":',
            span("chat", "chat-response", '[{"type":"text","text":"', esc(r.choice(_ASSISTANT)), '"}]'),
            f',"stop_reason":"end_turn",{usage}}}',
        ]
    # plain-text transcript block
    turns = g.chat_turns(frag or ())
    if len([t for t in turns if t[0] != "system"]) < 2:
        turns.append(("assistant", [r.choice(_ASSISTANT)]))
    sep = "\n" if r.random() < 0.3 else " "
    body: list[Piece] = []
    first = True
    for role, content in turns:
        if role == "system":
            continue
        if not first:
            body.append(sep)
        first = False
        label = "User: " if role == "user" else "Assistant: "
        text = [c.replace("\n", " ") if isinstance(c, str) and sep == " " else c for c in content]
        body += [label, *text]
    return [f"{g.ts('py')} INFO [chat.history] conv={g.uuid()} ", span("chat", "chat-transcript", *body)]


def _sql(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    head = f"{g.ts('py')} INFO [sqlalchemy.engine.Engine] "
    if frag is not None and not _is_multiline(frag):
        return [head, f"UPDATE users SET updated_at=now() WHERE id={r.randrange(10**6)} -- ", *frag]
    if frag is not None:
        return [head, "connect ", *frag]
    return [
        head
        + r.choice(
            [
                "SELECT id, title, created_at FROM conversations WHERE user_id = %(user_id)s "
                f"LIMIT {r.choice([20, 50])}",
                "INSERT INTO log_stream (timestamp, span_name, _service) "
                f"VALUES ({g.ts('ms')}, 'chat.completion', 'api')",
                f"[cached since {r.random() * 900:.1f}s ago] {{'user_id': {r.randrange(10**6)}}}",
                "BEGIN (implicit)",
                "COMMIT",
                f"SELECT count(*) FROM messages WHERE created_at > now() - interval '{r.randrange(1, 30)} day'",
            ]
        )
    ]


def _k8s(g: _Gen, frag: list[Piece] | None) -> list[Piece]:
    r = g.rng
    app = r.choice(["chat-api", "inference", "log-shipper", "clickhouse"])
    pod = f"{app}-{g.hexid(10)}-{_rand(r, _LOWER + _DIGITS, 5)}"
    image = f"registry.internal/chat-api:v{r.randrange(1, 4)}.{r.randrange(30)}.{r.randrange(10)}"
    reason = r.choice(["Pulled", "Created", "Started", "BackOff", "Unhealthy", "Scheduled", "Killing"])
    msg = {
        "Pulled": f'Successfully pulled image "{image}@sha256:{g.hexid(64)}" in {r.randrange(1, 9000)}ms',
        "Created": "Created container app",
        "Started": "Started container app",
        "BackOff": "Back-off restarting failed container app",
        "Unhealthy": f"Readiness probe failed: HTTP probe failed with statuscode: {r.choice([500, 503])}",
        "Scheduled": f"Successfully assigned prod/{pod} to node-{r.randrange(1, 40)}",
        "Killing": "Stopping container app",
    }[reason]
    head = f"{g.ts('k8s')} {r.choice(['Normal', 'Warning'])} {reason} pod/{pod} "
    if frag is not None and not _is_multiline(frag):
        return [head, "env from secret: ", *frag]
    return [head + msg]


def _negative(g: _Gen) -> list[Piece]:
    """Hard negatives: look-alikes of secrets and PII, never a planted value."""
    r = g.rng
    digits16 = _rand(r, _DIGITS, 15)
    png = base64.b64encode(bytes(r.getrandbits(8) for _ in range(r.randrange(48, 180)))).decode()
    version = f"v{r.randrange(1, 5)}.{r.randrange(40)}.{r.randrange(20)}"
    bad_luhn = digits16 + next(c for c in _DIGITS if not luhn_valid(digits16 + c))
    options = [
        f"trace_id={g.hexid(32)} span_id={g.hexid(16)} parent={g.hexid(16)} request_id={g.uuid()}",
        f"deployed commit {g.hexid(40)} (short {g.hexid(7)}) image digest sha256:{g.hexid(64)}",
        f'avatar uploaded src="data:image/png;base64,{png}"',
        f"created_at={g.ts('s')} updated_at_ms={g.ts('ms')} version={version}",
        f"order_id={bad_luhn} status=shipped items={r.randrange(1, 9)}",
        "docs: set AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE for the tutorial",
        "config template: OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxx",
        'curl -H "Authorization: Bearer <YOUR_API_KEY>" https://api.deepseek.com/chat/completions',
        "env: OPENAI_API_KEY=${OPENAI_API_KEY} DEEPSEEK_API_KEY=${DEEPSEEK_API_KEY}",
        "login attempt user_id=" + str(r.randrange(10**6)) + " password=******** result=denied",
        f"password_reset_url=https://accounts.internal/reset?id={g.uuid()} sent=true",
        f"token_count={r.randrange(1, 9000)} max_tokens={r.choice([1024, 4096, 8192])} password_min_length=12",
        f"order number {r.randrange(10**9, 10**10)}-{r.randrange(100, 999)} invoice INV-{r.randrange(10**5, 10**6)}",
        f"latency_ns={r.choice(['138', '139', '186'])}{_rand(r, _DIGITS, 8)} bytes_out={r.randrange(10**9, 10**10)}",
        f"static asset icon@2x.png logo@3x.png loaded; dependency lodash@4.17.{r.randrange(10, 22)} "
        f"@types/node@20.{r.randrange(1, 17)}.{r.randrange(9)}",
        f"build {r.randrange(2023, 2026)}.{r.randrange(1, 13):02d}.{r.randrange(1, 29):02d}-{g.hexid(8)} "
        f"ip={g.ip()} port={r.randrange(1024, 65535)}",
        f"api_key_id={r.randrange(1000, 99999)} api_key_last4={_rand(r, _DIGITS, 4)} key_name=prod-backend",
        f"session_id={g.uuid()} csrf_state={g.hexid(24)} nonce={r.randrange(10**12, 10**13)}",
    ]
    return [f"{g.ts('py')} INFO [{g.pick(_PY_LOGGERS)}] ", r.choice(options)]


_STYLES: tuple[tuple[Callable[[_Gen, list[Piece] | None], list[Piece]], float], ...] = (
    (_nginx, 0.22),
    (_python, 0.17),
    (_java, 0.11),
    (_gateway_json, 0.12),
    (_llm_record, 0.09),
    (_sql, 0.08),
    (_k8s, 0.06),
)
_NEGATIVE_SHARE = 0.15
# Line-style weights of a general application log: mostly access and app logs, few LLM bodies, few look-alikes.
# The default mix above is an AI gateway's log (a fifth of the lines carry a conversation) made hard on
# purpose (15 % hard negatives); benchmarks report both.
_APP_STYLES = (0.34, 0.24, 0.16, 0.06, 0.01, 0.12, 0.07)
_APP_NEGATIVE_SHARE = 0.03
# A service log with realistic low hit density: the application mix, but only the planted hit lines may carry
# an LLM body, so conversations are as rare as secrets (about one line in 500 carries anything).
_QUIET_STYLES = (0.34, 0.24, 0.16, 0.0, 0.0, 0.12, 0.07)
MIXES = ("gateway", "app", "quiet")


def _one(g: _Gen, hit: bool, mix: str = "gateway") -> LabelledLine:
    r = g.rng
    styles = [s for s, _ in _STYLES]
    if mix == "gateway":
        weights = [w for _, w in _STYLES]
    else:
        weights = list(_QUIET_STYLES if mix == "quiet" and not hit else _APP_STYLES)
    negative_share = _NEGATIVE_SHARE if mix == "gateway" else _APP_NEGATIVE_SHARE
    if not hit and r.random() < negative_share:
        return _render(_negative(g))
    style = r.choices(styles, weights)[0]
    frag = _frag(g) if hit else None
    if frag is not None and _is_multiline(frag) and style is _nginx:
        style = _python
    return _render(style(g, frag))


def generate_lines(n: int, *, seed: int = 0, hit_rate: float = 0.05) -> Iterator[LabelledLine]:
    """Yield ``n`` labelled log records; about ``hit_rate`` of them carry a planted secret or PII value.

    Deterministic for a given ``seed``. Records without a hit may still carry a planted ``chat``
    span (LLM request logs); hard-negative records carry nothing.
    """
    rng = random.Random(seed)
    g = _Gen(rng)
    for _ in range(n):
        yield _one(g, rng.random() < hit_rate)


# --------------------------------------------------------------------------------------------------
# big files


def _parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B")
    mult = 1
    for suffix, m in (("K", 10**3), ("M", 10**6), ("G", 10**9)):
        if t.endswith(suffix):
            t, mult = t[: -len(suffix)], m
    return int(float(t) * mult)


def write_log(
    path: str | os.PathLike[str], size_bytes: int, *, seed: int = 0, hit_rate: float = 0.002, mix: str = "gateway"
) -> int:
    """Write a realistic log file of about ``size_bytes`` bytes (UTF-8); return the bytes written.

    ``mix``: ``"gateway"`` (an AI gateway's log: a fifth of the lines carry a conversation, many look-alikes),
    ``"app"`` (a general application log: about one line in 15 carries an LLM body) or ``"quiet"`` (the same
    application log where only the ``hit_rate`` lines carry anything, conversations included).

    Non-hit lines come from a pool of generated templates whose timestamps are refreshed per line;
    hit lines are generated fresh, so every planted value is distinct.
    """
    rng = random.Random(seed)
    pool_gen = _Gen(random.Random(seed + 1), ts_placeholders=True)
    pool: list[list[str]] = []
    for _ in range(3000):
        text = _one(pool_gen, False, mix).text
        pool.append(text.split("\x00"))
    hit_gen = _Gen(random.Random(seed + 2))
    t = datetime(2025, 1, 6, 0, 0, 0, tzinfo=UTC)
    cache_sec = -1
    cache: dict[str, str] = {}
    written = 0
    chunk: list[str] = []
    chunk_bytes = 0
    with open(path, "wb") as fh:
        while written < size_bytes:
            t += timedelta(microseconds=rng.randrange(100, 20000))
            sec = int(t.timestamp())
            if sec != cache_sec:
                cache_sec = sec
                cache = {f: format_ts(t, f) for f in ("iso", "py", "nginx", "s", "k8s")}
            ms = f"{t.microsecond // 1000:03d}"
            if rng.random() < hit_rate:
                line = _one(hit_gen, True, mix).text
            else:
                parts = rng.choice(pool)
                if len(parts) == 1:
                    line = parts[0]
                else:
                    out = []
                    for i, p in enumerate(parts):
                        if i % 2 == 0:
                            out.append(p)
                        elif p == "ms":
                            out.append(cache["s"] + ms)
                        elif p == "iso":
                            out.append(cache[p][:-4] + ms + "Z")
                        elif p == "py":
                            out.append(cache[p][:-3] + ms)
                        else:
                            out.append(cache[p])
                    line = "".join(out)
            data = line + "\n"
            chunk.append(data)
            n = len(data.encode("utf-8")) if not data.isascii() else len(data)
            chunk_bytes += n
            written += n
            if chunk_bytes > 1 << 20:
                fh.write("".join(chunk).encode("utf-8"))
                chunk, chunk_bytes = [], 0
        fh.write("".join(chunk).encode("utf-8"))
    return written


# --------------------------------------------------------------------------------------------------
# DeepSeek-style ClickHouse log_stream rows

_SPANS = (
    "chat.completion",
    "http.request",
    "auth.verify",
    "db.query",
    "upstream.call",
    "billing.charge",
    "file.upload",
    "cache.lookup",
)


def log_stream_rows(n: int, *, seed: int = 0) -> list[dict[str, object]]:
    """Rows shaped like the ``log_stream`` table exposed in January 2025 (all values generated).

    Columns: timestamp, span_name, ``string.names``/``string.values`` (parallel lists of str),
    ``number.names``/``number.values``, _service, _host, _source.
    """
    rng = random.Random(seed)
    g = _Gen(rng)
    rows: list[dict[str, object]] = []
    for _ in range(n):
        g.tick()
        span_name = rng.choice(_SPANS)
        names: list[str] = []
        values: list[str] = []

        def add(name: str, value: str, names: list[str] = names, values: list[str] = values) -> None:
            names.append(name)
            values.append(value)

        add("request_id", g.uuid())
        add("trace_id", g.hexid(32))
        if span_name == "chat.completion":
            msgs = [
                {"role": role, "content": "".join(p for p in content if isinstance(p, str))}
                for role, content in g.chat_turns()
            ]
            add("model", g.pick(_MODELS[:3]))
            add("messages", json.dumps(msgs, ensure_ascii=False))
            if rng.random() < 0.3:
                add("user_email", fake_pii("email", rng))
            if rng.random() < 0.25:
                add("upstream.provider", "deepseek")
                add("authorization", "Bearer " + fake_secret("deepseek-api-key", rng))
        elif span_name == "http.request":
            add("http.method", rng.choice(["GET", "POST"]))
            add("http.path", g.pick(_PATHS))
            add("http.user_agent", g.pick(_AGENTS))
            add("client_ip", g.ip())
            if rng.random() < 0.2:
                add("http.host", "api.deepseek.com")
                add("http.header.authorization", "Bearer " + fake_secret("deepseek-api-key", rng))
        elif span_name == "auth.verify":
            add("user_id", str(rng.randrange(10**6, 10**9)))
            if rng.random() < 0.4:
                add("token", fake_secret("jwt", rng))
            if rng.random() < 0.3:
                add("phone", fake_pii("phone", rng))
        elif span_name == "db.query":
            host = rng.choice(_INTERNAL)
            add("db.system", rng.choice(["clickhouse", "postgresql", "mysql"]))
            add("db.statement", "SELECT * FROM chat_sessions WHERE user_id = ? ORDER BY created_at DESC LIMIT 20")
            add("net.peer.name", host)
            if rng.random() < 0.25:
                add("db.url", f"clickhouse://default:{fake_secret('db-url-password', rng)}@{host}:9000/logs")
        elif span_name == "upstream.call":
            add("upstream", rng.choice(["http://inference-04.internal:8000/v1", "http://10.12.7.3:9090/generate"]))
            add("status", str(rng.choice([200, 200, 502, 504])))
            if rng.random() < 0.15:
                key_type = rng.choice(["openai-project-key", "anthropic-api-key"])
                add("upstream.api_key", fake_secret(key_type, rng))
        elif span_name == "billing.charge":
            add("currency", rng.choice(["CNY", "USD"]))
            add("customer_email", fake_pii("email", rng))
            if rng.random() < 0.2:
                add("card", fake_pii("credit-card", rng))
        elif span_name == "file.upload":
            add("file.name", f"report_{rng.randrange(1000)}.pdf")
            add("file.sha256", g.hexid(64))
            add("storage", f"s3://chat-uploads/{g.uuid()}")
        else:
            add("cache.key", f"conv:{rng.randrange(10**6, 10**9)}")
            add("cache.hit", rng.choice(["true", "false"]))
        num_names = ["duration_ms", "status_code", "bytes"]
        num_values: list[float] = [
            round(rng.random() * 3000, 3),
            float(rng.choice([200, 200, 401, 500])),
            float(rng.randrange(100, 10**6)),
        ]
        if span_name == "chat.completion":
            num_names += ["prompt_tokens", "completion_tokens"]
            num_values += [float(rng.randrange(10, 4000)), float(rng.randrange(1, 2000))]
        rows.append(
            {
                "timestamp": g.t.strftime("%Y-%m-%d %H:%M:%S.") + f"{g.t.microsecond:06d}",
                "span_name": span_name,
                "string.names": names,
                "string.values": values,
                "number.names": num_names,
                "number.values": num_values,
                "_service": rng.choice(["api-gateway", "chat-svc", "auth-svc", "billing", "inference"]),
                "_host": rng.choice(_HOSTS) + ".prod.internal",
                "_source": rng.choice(["otel-collector", "vector", "fluent-bit"]),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------

SAMPLE_SEED = 20250129
SAMPLE_ROWS = 300


def _default_sample_path() -> Path:
    return Path(__file__).resolve().parent / "samples" / "log_stream.jsonl"


def write_sample(path: str | os.PathLike[str] | None = None) -> Path:
    out = Path(path) if path else _default_sample_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        for row in log_stream_rows(SAMPLE_ROWS, seed=SAMPLE_SEED):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redline.synth", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--sample",
        nargs="?",
        const="",
        metavar="OUT",
        help="write the log_stream demo sample (default: the bundled samples/log_stream.jsonl)",
    )
    group.add_argument("--log", metavar="OUT", help="write a large realistic log file")
    parser.add_argument("--size", default="100MB", help="size for --log, e.g. 10MB, 1.5GB (default 100MB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hit-rate", type=float, default=0.002)
    parser.add_argument("--mix", choices=MIXES, default="gateway", help="line mix for --log")
    args = parser.parse_args(argv)
    if args.log:
        n = write_log(args.log, _parse_size(args.size), seed=args.seed, hit_rate=args.hit_rate, mix=args.mix)
        print(f"wrote {n} bytes to {args.log}")
    else:
        out = write_sample(args.sample or None)
        print(f"wrote {SAMPLE_ROWS} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
