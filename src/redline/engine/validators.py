"""Checks a candidate value must pass before it becomes a finding.

Rules name validators by string (``"entropy:3.5"``, ``"stdnum:cn.ric"``); this module turns those names into
callables. Checksummed identifiers are delegated to python-stdnum and phonenumbers rather than re-implemented.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import importlib
import importlib.util
import ipaddress
import json
import math
import operator
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable
from typing import cast

from redline.engine.cache import memo

Validator = Callable[[str], bool]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_CLOG2C = [0.0] + [c * math.log2(c) for c in range(1, 4097)]


def shannon_entropy(value: str) -> float:
    """Bits per character. H = log2(n) - sum(c·log2 c)/n, with c·log2 c from a table: this runs for every
    candidate of every generic rule, so it avoids a Python-level loop over the characters."""
    n = len(value)
    if not n:
        return 0.0
    counts = Counter(value).values()
    total = sum(map(_CLOG2C.__getitem__, counts)) if n <= 4096 else sum(c * math.log2(c) for c in counts)
    return max(0.0, math.log2(n) - total / n)


def _entropy(arg: str) -> Validator:
    threshold = float(arg)
    return lambda v: shannon_entropy(v) >= threshold


def _charclasses(arg: str) -> Validator:
    need = int(arg)

    def check(v: str) -> bool:
        classes = (
            any(c.islower() for c in v),
            any(c.isupper() for c in v),
            any(c.isdigit() for c in v),
            any(not c.isalnum() for c in v),
        )
        return sum(classes) >= need

    return check


# Letters in runs joined by single separators. Written without nested quantifiers: "(?:[A-Za-z]+[_.-]?)+"
# matches the same strings but backtracks exponentially on a long run of letters that fails at the end.
_IDENT = re.compile(r"[A-Za-z]+(?:[_\-.][A-Za-z]+)*[_\-.]?\Z")
_CAMEL_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def not_word(v: str) -> bool:
    """Reject plain words and identifiers: ``changeme``, ``userPassword``, ``db_password_prod``."""
    if not v:
        return False
    if _IDENT.match(v) and not any(c.isdigit() for c in v):
        parts = _CAMEL_WORDS.findall(v)
        # A long run of letters with no case structure can still be a random token (e.g. base32-ish);
        # only identifier-shaped runs made of short word-like pieces count as words.
        if len(v) <= 24 or all(len(p) <= 12 for p in parts):
            return False
    return True


_HEX_DIGEST = re.compile(r"(?:[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}|[0-9A-F]{32}|[0-9A-F]{40}|[0-9A-F]{64})\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def not_hash(v: str) -> bool:
    return not (_HEX_DIGEST.match(v) or _UUID.match(v))


def crc32_base62(v: str) -> bool:
    """GitHub and npm tokens end in a base62 CRC32 of their 30 random characters."""
    body = v.rsplit("_", 1)[-1]
    if len(body) < 36:
        return False
    random_part, check = body[-36:-6], body[-6:]
    crc = zlib.crc32(random_part.encode("ascii", "replace"))
    digits = []
    while crc:
        crc, r = divmod(crc, 62)
        digits.append(_BASE62[r])
    return "".join(reversed(digits)).rjust(6, "0") == check


def _b64url_json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def jwt(v: str) -> bool:
    parts = v.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return False
    try:
        header = _b64url_json(parts[0])
        payload = _b64url_json(parts[1])
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return False
    return isinstance(header, dict) and "alg" in header and isinstance(payload, dict)


def _base64_len(arg: str) -> Validator:
    want = int(arg)

    def check(v: str) -> bool:
        try:
            raw = base64.b64decode(v + "=" * (-len(v) % 4), validate=True)
        except (binascii.Error, ValueError):
            return False
        return len(raw) == want

    return check


_NOT_DIGIT = re.compile(r"[^0-9]+")


def _digits(v: str) -> str:
    return _NOT_DIGIT.sub("", v)


def luhn(v: str) -> bool:
    """Luhn checksum over the digits (python-stdnum), for numbers of card length (12 digits or more)."""
    from stdnum import luhn as _luhn

    digits = _digits(v)
    return len(digits) >= 12 and bool(_luhn.is_valid(digits))


# (prefix ranges, allowed lengths) per issuer; ranges are inclusive on the leading digits.
_ISSUERS: tuple[tuple[tuple[tuple[int, int], ...], tuple[int, ...]], ...] = (
    (((4, 4),), (13, 16, 19)),  # Visa
    (((51, 55), (2221, 2720)), (16,)),  # Mastercard
    (((34, 34), (37, 37)), (15,)),  # Amex
    (((6011, 6011), (644, 649), (65, 65)), (16, 19)),  # Discover
    (((3528, 3589),), (16, 19)),  # JCB
    (((62, 62),), (16, 17, 18, 19)),  # UnionPay
    (((300, 305), (36, 36), (38, 39)), (14, 16)),  # Diners
)


def card(v: str) -> bool:
    digits = _digits(v)
    # The issuer ranges first: they turn away most numbers (timestamps, ids) before the checksum is computed.
    return _known_issuer(digits) and len(set(digits)) >= 3 and luhn(digits)


def _known_issuer(digits: str) -> bool:
    for ranges, lengths in _ISSUERS:
        if len(digits) not in lengths:
            continue
        for lo, hi in ranges:
            width = len(str(lo))
            if lo <= int(digits[:width]) <= hi:
                return True
    return False


@functools.cache
def _stdnum_is_valid(arg: str) -> Callable[[str], object]:
    """The ``is_valid`` of python-stdnum's module ``arg``; ValueError when there is none."""
    try:
        module = importlib.import_module(f"stdnum.{arg}")
    except ImportError as exc:
        raise ValueError(f"no python-stdnum module named {arg!r}") from exc
    is_valid = getattr(module, "is_valid", None)
    if not callable(is_valid):
        raise ValueError(f"python-stdnum module {arg!r} has no is_valid()")
    return cast(Callable[[str], object], is_valid)


@functools.cache
def _stdnum_installed() -> str:
    """Which python-stdnum is installed, found without importing it (which means importing stdnum.util)."""
    spec = importlib.util.find_spec("stdnum")
    if spec is None or spec.origin is None:
        return ""
    try:
        return f"{spec.origin}:{os.stat(spec.origin).st_mtime_ns}"
    except OSError:
        return ""


def _stdnum(arg: str) -> Validator:
    # Importing python-stdnum modules (stdnum.util pulls in pydoc and ssl) costs more than the rest of loading
    # the rules: the module is checked now only when no earlier run found it in this installation of
    # python-stdnum (the memo), and imported at the first value to check.
    installed = _stdnum_installed()
    if installed:
        memo().get("stdnum", (arg, installed), lambda: bool(_stdnum_is_valid(arg)))
    else:
        _stdnum_is_valid(arg)
    return functools.partial(_stdnum_valid, arg)


def _stdnum_valid(arg: str, v: str) -> bool:
    is_valid = _stdnum_is_valid(arg)
    try:
        return bool(is_valid(v))
    except Exception:
        return False


def iban(v: str) -> bool:
    return _stdnum_valid("iban", v)


def _phone(arg: str | None) -> Validator:
    region = arg.upper() if arg else None

    def check(v: str) -> bool:
        import phonenumbers  # at the first value to check: importing it costs ~10 ms of start-up

        try:
            num = phonenumbers.parse(v, region)
        except phonenumbers.NumberParseException:
            return False
        return bool(phonenumbers.is_valid_number(num))

    return check


def ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def ip_public(v: str) -> bool:
    try:
        return ipaddress.ip_address(v).is_global
    except ValueError:
        return False


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y%m%d", "%Y年%m月%d日")


def date(v: str) -> bool:
    today = _dt.date.today()
    for fmt in _DATE_FORMATS:
        try:
            d = _dt.datetime.strptime(v.strip(), fmt).date()
        except ValueError:
            continue
        if d.year >= 1900 and d <= today:
            return True
    return False


# Placeholder words are looked for in the lowercased value with plain substring tests; the few phrases that
# need a pattern are only searched when one of their words occurs. Every candidate of every secret rule goes
# through here, often twice (a provider rule and a generic rule on the same value).
_PLACEHOLDER_SUBSTRINGS = ("example", "xxxx", "dummy", "placeholder", "redacted", "changeme", "change_me", "insert",
                           "...", "…")
_PLACEHOLDER_PHRASES = re.compile(
    r"your[_\-. ]?(?:api|secret|access|auth|token|key|pass)|replace[_\-]?me|sample[_\-]?key|fake[_\-]?key|test[_\-]?key"
)
_PHRASE_HINTS = ("your", "replace", "sample", "fake", "test")
_TEMPLATE = re.compile(r"<[^<>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|%\([^)]*\)s|\$\([^)]*\)|\*{3,}|#{4,}|^\$[A-Z_][A-Z0-9_]*$")
_TEMPLATE_HINTS = ("<", "${", "{{", "%(", "$(", "***", "####")


# ASCII characters to their successor; other characters to one no text contains next to itself.
_NEXT_CHAR = {i: i + 1 for i in range(128)} | {i: 0xFFFF for i in range(128, 256)}


# The hint lists above as one search each: this runs for every candidate of every secret rule, and a
# generator over the words costs several times one regular-expression search.
_PLACEHOLDER_WORD = re.compile("|".join(map(re.escape, _PLACEHOLDER_SUBSTRINGS)))
_PHRASE_HINT = re.compile("|".join(_PHRASE_HINTS))
_TEMPLATE_HINT = re.compile("|".join(map(re.escape, _TEMPLATE_HINTS)))
_PROVIDER_PREFIX = re.compile(r"^[A-Za-z]+[-_]")


def not_placeholder(v: str) -> bool:
    """Documentation keys and template variables are not leaks; saying so keeps people from muting a rule."""
    low = v.lower()
    if _PLACEHOLDER_WORD.search(low):
        return False
    if _PHRASE_HINT.search(low) and _PLACEHOLDER_PHRASES.search(low):
        return False
    if (v[:1] == "$" or _TEMPLATE_HINT.search(v)) and _TEMPLATE.search(v):
        return False
    core = _PROVIDER_PREFIX.sub("", v, count=1)  # ignore a provider prefix like sk- or ghp_
    if len(core) >= 8:
        if len(set(core)) <= 2:
            return False
        # Sequential filler such as 1234567890abcdef or abcdefghijklmnop: count the neighbours one code
        # point apart, comparing the shifted string with itself in C rather than looping in Python.
        seq = sum(map(operator.eq, core[:-1].translate(_NEXT_CHAR), core[1:]))
        if seq >= len(core) * 0.8:
            return False
    return True


_SIMPLE: dict[str, Validator] = {
    "not-word": not_word,
    "not-hash": not_hash,
    "crc32-base62": crc32_base62,
    "jwt": jwt,
    "luhn": luhn,
    "card": card,
    "iban": iban,
    "ip": ip,
    "ip-public": ip_public,
    "date": date,
    "not-placeholder": not_placeholder,
}

_WITH_ARG: dict[str, Callable[[str], Validator]] = {
    "entropy": _entropy,
    "charclasses": _charclasses,
    "base64": _base64_len,
    "stdnum": _stdnum,
}

NAMES: tuple[str, ...] = (*sorted(_SIMPLE), "entropy:X", "charclasses:N", "base64:N", "stdnum:MODULE",
                          "phone", "phone:CC")


def get_validator(spec: str) -> Validator:
    """Resolve ``"name"`` or ``"name:arg"``; raises ValueError naming the problem."""
    name, _, arg = spec.partition(":")
    if name == "phone":
        return _phone(arg or None)
    if name in _SIMPLE:
        if arg:
            raise ValueError(f"validator {name!r} takes no argument")
        return _SIMPLE[name]
    if name in _WITH_ARG:
        if not arg:
            raise ValueError(f"validator {name!r} needs an argument, e.g. {name}:3")
        try:
            return _WITH_ARG[name](arg)
        except ValueError as exc:
            raise ValueError(f"validator {spec!r}: {exc}") from exc
    raise ValueError(f"unknown validator {spec!r}; known: {', '.join(NAMES)}")
