"""Pseudonymisation scope: stable placeholders per value, and exact restoration.

A placeholder is ``<LABEL_N>``: ``LABEL`` is the finding type in capitals (``email`` → ``EMAIL``,
``openai-project-key`` → ``OPENAI_PROJECT_KEY``), ``N`` counts distinct values of that type from 1. The closing
``>`` means no placeholder is a prefix of another (``<EMAIL_1>`` vs ``<EMAIL_10>``). Values are keyed by the
exact text that was replaced, so :meth:`Vault.restore` gives back the original text character for character.

A vault holds raw values in memory only; it is never written anywhere by redline.
"""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from collections.abc import Callable

_LABEL_BAD = re.compile(r"[^A-Z0-9]+")
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[1-9][0-9]*>")


def type_label(type: str) -> str:
    label = _LABEL_BAD.sub("_", type.upper()).strip("_")
    if not label or not label[0].isalpha():
        label = "V_" + label if label else "VALUE"
    return label


class Vault:
    """One pseudonymisation scope (a file, a conversation, a request)."""

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._sorted: list[str] = []
        self.max_len = 0

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def placeholder(self, value: str, type: str) -> str:
        """The placeholder of ``value``: the same value (and type) always gets the same one."""
        label = type_label(type)
        key = (label, value)
        ph = self._by_value.get(key)
        if ph is None:
            n = self._counts.get(label, 0) + 1
            self._counts[label] = n
            ph = f"<{label}_{n}>"
            self._by_value[key] = ph
            self._by_placeholder[ph] = value
            insort(self._sorted, ph)
            self.max_len = max(self.max_len, len(ph))
        return ph

    def lookup(self, placeholder: str) -> str | None:
        return self._by_placeholder.get(placeholder)

    def restore(self, text: str) -> str:
        """Put back the original values of every placeholder of this vault found in ``text``."""
        if "<" not in text or not self._by_placeholder:
            return text
        table = self._by_placeholder
        return PLACEHOLDER.sub(lambda m: table.get(m.group(), m.group()), text)

    def is_prefix(self, tail: str) -> bool:
        """True when ``tail`` is the beginning (not the whole) of one of this vault's placeholders."""
        i = bisect_left(self._sorted, tail)
        return i < len(self._sorted) and self._sorted[i].startswith(tail) and self._sorted[i] != tail

    def stream_restorer(self, restore: Callable[[str], str] | None = None) -> StreamRestorer:
        """``restore`` replaces :meth:`restore` for the text released (e.g. restoring into JSON-escaped text)."""
        return StreamRestorer(self, restore)


class StreamRestorer:
    """Restores placeholders in text that arrives in pieces (a streamed LLM response).

    ``feed`` returns what can be emitted now; only a tail that may be the start of a placeholder is held back
    (never more than the longest placeholder). ``flush`` returns the rest at the end of the stream.
    """

    def __init__(self, vault: Vault, restore: Callable[[str], str] | None = None) -> None:
        self.vault = vault
        self._restore = restore or vault.restore
        self._pending = ""

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk if self._pending else chunk
        self._pending = ""
        if not text:
            return ""
        cut = text.rfind("<", max(0, len(text) - self.vault.max_len))
        if cut != -1 and self.vault.is_prefix(text[cut:]):
            self._pending = text[cut:]
            text = text[:cut]
        return self._restore(text)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return self._restore(text)
