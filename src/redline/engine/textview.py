"""A decoded view of text that carries JSON string escapes, with exact offsets back into the raw text.

Logs store request bodies as JSON inside JSON (``"body":"{\\"messages\\":[...]}"``): a key or a transcript
there is only visible after one level of unescaping. Rules run over the decoded view; findings are mapped
back so that offsets always point into the raw text the user has.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from itertools import accumulate

_SENTINEL = "\x00"
_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
# One token per decoded character; must agree exactly with _decode_line.
_TOKEN = re.compile(r"\\(?:u[0-9a-fA-F]{4}|[\\\"/bfnrt])")


def _decode_line(line: str) -> str:
    # str.replace runs in C; a per-escape Python loop would cost more than the scan itself. Escaped
    # backslashes go first (to a sentinel) so "\\\\n" stays a backslash followed by "n".
    s = line.replace("\\\\", _SENTINEL)
    s = (
        s.replace('\\"', '"').replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")
        .replace("\\/", "/").replace("\\b", "\b").replace("\\f", "\f")
    )
    if "\\u" in s:
        s = _UNICODE.sub(lambda m: chr(int(m.group(1), 16)), s)
    return s.replace(_SENTINEL, "\\")


class _LineMap:
    __slots__ = ("shrink", "vpos")

    def __init__(self, raw_line: str) -> None:
        vpos: list[int] = []
        shrink = [0]
        total = 0
        for m in _TOKEN.finditer(raw_line):
            vpos.append(m.start() - total)
            total += m.end() - m.start() - 1
            shrink.append(total)
        self.vpos = vpos
        self.shrink = shrink

    def to_raw(self, u: int) -> int:
        return u + self.shrink[bisect_left(self.vpos, u)]


class TextView:
    """``text`` is what rules see; :meth:`to_raw` maps an offset in it to an offset in ``raw``."""

    __slots__ = ("_line_maps", "_raw_lines", "_raw_starts", "_view_starts", "identity", "raw", "text")

    def __init__(self, raw: str, *, decode_json: bool = True) -> None:
        self.raw = raw
        self.identity = True
        self.text = raw
        if not decode_json or "\\" not in raw:
            return
        raw_lines = raw.split("\n")
        view_lines = [(_decode_line(ln) if "\\" in ln else ln) for ln in raw_lines]
        if all(v is r or v == r for v, r in zip(view_lines, raw_lines, strict=True)):
            return
        self.identity = False
        self.text = "\n".join(view_lines)
        self._raw_lines = raw_lines
        self._raw_starts = [0, *accumulate(len(ln) + 1 for ln in raw_lines)]
        self._view_starts = [0, *accumulate(len(ln) + 1 for ln in view_lines)]
        self._line_maps: dict[int, _LineMap] = {}

    def to_raw(self, v: int) -> int:
        if self.identity:
            return v
        i = bisect_right(self._view_starts, v) - 1
        if i >= len(self._raw_lines):
            return len(self.raw)
        u = v - self._view_starts[i]
        raw_line = self._raw_lines[i]
        if "\\" in raw_line:
            lm = self._line_maps.get(i)
            if lm is None:
                lm = self._line_maps[i] = _LineMap(raw_line)
            u = lm.to_raw(u)
        return self._raw_starts[i] + u

    def span_to_raw(self, start: int, end: int) -> tuple[int, int]:
        return self.to_raw(start), self.to_raw(end)
