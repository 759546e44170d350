"""A decoded view of text that carries JSON string escapes, with exact offsets back into the raw text.

Logs store request bodies as JSON inside JSON (``"body":"{\\"messages\\":[...]}"``): a key or a transcript
there is only visible after one level of unescaping. Rules run over the decoded view; findings are mapped
back so that offsets always point into the raw text the user has.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
# Split a raw line into [text, escape, text, escape, ..., text]; each escape decodes to one character.
# Must agree exactly with _decode_line.
_SPLIT = re.compile(r"(\\u[0-9a-fA-F]{4}|\\[\\\"/bfnrt])")
_SIMPLE_ESCAPES = (('\\"', '"'), ("\\n", "\n"), ("\\t", "\t"), ("\\r", "\r"), ("\\/", "/"), ("\\b", "\b"),
                   ("\\f", "\f"))


def _decode_line(line: str) -> str:
    # str.replace runs in C; a per-escape Python loop would cost more than the scan. Escaped backslashes
    # go first (to a stand-in) so "\\\\n" stays a backslash followed by "n". Lines are short, so checking
    # which escapes occur is cheaper than replacing blindly.
    bs = "\\\\" in line
    s = line.replace("\\\\", "\x00") if bs else line
    for esc, char in _SIMPLE_ESCAPES:
        if esc in s:
            s = s.replace(esc, char)
    if "\\u" in s:
        s = _UNICODE.sub(lambda m: chr(int(m.group(1), 16)), s)
    return s.replace("\x00", "\\") if bs else s


class _LineMap:
    """View offset to raw offset within one line, built from C-level splits rather than a Python loop."""

    __slots__ = ("rstart", "vstart")

    def __init__(self, raw_line: str) -> None:
        lengths = list(map(len, _SPLIT.split(raw_line)))
        vlengths = lengths.copy()
        vlengths[1::2] = [1] * (len(lengths) // 2)
        self.rstart = list(accumulate(lengths, initial=0))
        self.vstart = list(accumulate(vlengths, initial=0))

    def to_raw(self, u: int) -> int:
        k = bisect_right(self.vstart, u) - 1
        if k >= len(self.vstart) - 1:
            k = len(self.vstart) - 2
        if k % 2:  # inside an escape: it is one view character, starting at the escape
            return self.rstart[k]
        return self.rstart[k] + (u - self.vstart[k])


class TextView:
    """``text`` is what rules see; :meth:`to_raw` maps an offset in it to an offset in ``raw``.

    Only lines holding a backslash are decoded; the others are shared between raw and view unchanged, so
    the cost follows the number of escaped lines, not the size of the text.
    """

    __slots__ = ("_changed", "_line_maps", "_view_starts", "identity", "raw", "text")

    def __init__(self, raw: str, *, decode_json: bool = True) -> None:
        self.raw = raw
        self.identity = True
        self.text = raw
        pos = raw.find("\\") if decode_json else -1
        if pos == -1:
            return
        pieces: list[str] = []
        # One entry per decoded line: (raw start, raw end, view start, view end).
        changed: list[tuple[int, int, int, int]] = []
        find, rfind = raw.find, raw.rfind
        prev = 0
        shift = 0  # view offset minus raw offset, for text after the last decoded line
        while pos != -1:
            ls = rfind("\n", 0, pos) + 1
            le = find("\n", pos)
            if le == -1:
                le = len(raw)
            line = raw[ls:le]
            decoded = _decode_line(line)
            if len(decoded) != len(line):
                pieces.append(raw[prev:ls])
                pieces.append(decoded)
                vs = ls + shift
                changed.append((ls, le, vs, vs + len(decoded)))
                shift += len(decoded) - len(line)
                prev = le
            pos = find("\\", le)
        if not changed:
            return
        pieces.append(raw[prev:])
        self.identity = False
        self.text = "".join(pieces)
        self._changed = changed
        self._view_starts = [c[2] for c in changed]
        self._line_maps: dict[int, _LineMap] = {}

    def to_raw(self, v: int) -> int:
        if self.identity:
            return v
        k = bisect_right(self._view_starts, v) - 1
        if k < 0:
            return v
        rs, re_, vs, ve = self._changed[k]
        if v >= ve:
            # Past this decoded line: plain text, shifted by what the decoded lines so far shrank.
            return v - ve + re_
        lm = self._line_maps.get(k)
        if lm is None:
            lm = self._line_maps[k] = _LineMap(self.raw[rs:re_])
        return rs + lm.to_raw(v - vs)

    def span_to_raw(self, start: int, end: int) -> tuple[int, int]:
        return self.to_raw(start), self.to_raw(end)
