"""A decoded view of text that carries JSON string escapes, with exact offsets back into the raw text.

Logs store request bodies as JSON inside JSON (``"body":"{\\"messages\\":[...]}"``): a key or a transcript
there is only visible after one level of unescaping. Rules run over the decoded view; findings are mapped
back so that offsets always point into the raw text the user has.
"""

from __future__ import annotations

import codecs
import re
from bisect import bisect_left, bisect_right
from itertools import accumulate

STAND_IN = "\x1a"


def _stand_in_errors(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeEncodeError):
        return STAND_IN * (exc.end - exc.start), exc.end
    raise exc


codecs.register_error("redline-sub", _stand_in_errors)


def ascii_bytes(text: str) -> bytes:
    """One byte per character: non-ASCII characters become the stand-in 0x1a."""
    return text.encode("ascii", "redline-sub")


# How much the ASCII decoder checks at a time when looking for non-ASCII bytes (its result is thrown away).
_PROBE_BYTES = 1 << 18
# Above this share of non-ASCII characters, holding the real text whole is cheaper than patching it in.
SPARSE_MAX_SHARE = 1 / 1024


class Chunk:
    """Text as the scanner holds it. ``text`` has one character for each character of the real text; in a
    sparse chunk each non-ASCII character is the stand-in ``\x1a`` and the real ones are kept aside at
    ``positions``. A log that is ASCII but for a few names or a line of Chinese then stays a one-byte string
    (Python widens a whole string for one wide character, and every pass over it costs twice as much), and
    rules whose patterns cannot tell a stand-in from a real character run on it unchanged (see
    ``rules.uniform``); :meth:`real` gives the real text of any part.
    """

    __slots__ = ("chars", "data", "positions", "text")

    def __init__(
        self, text: str, positions: list[int] | None = None, chars: list[str] | None = None,
        data: bytes | None = None,
    ) -> None:
        self.text = text
        self.positions: list[int] = positions or []
        self.chars: list[str] = chars or []
        # ``text`` as one byte per character (what Hyperscan scans), when it came that way.
        self.data = data

    def ascii_bytes(self) -> bytes:
        return self.data if self.data is not None else ascii_bytes(self.text)

    def __len__(self) -> int:
        return len(self.text)

    @property
    def sparse(self) -> bool:
        return bool(self.positions)

    def has_stand_ins(self, lo: int, hi: int) -> bool:
        """Whether ``text[lo:hi]`` holds a stand-in for a real character."""
        pos = self.positions
        if not pos:
            return False
        k = bisect_left(pos, lo)
        return k < len(pos) and pos[k] < hi

    def utf8_offset(self, i: int) -> int:
        """Where character ``i`` begins in the UTF-8 form of the real text (``surrogateescape``: a character
        that stands for an undecodable byte is that one byte)."""
        if self.positions:
            k = bisect_left(self.positions, i)
            return i + sum(len(c.encode("utf-8", "surrogateescape")) - 1 for c in self.chars[:k])
        head = self.text[:i]
        return i if head.isascii() else len(head.encode("utf-8", "surrogateescape"))

    def real(self, lo: int, hi: int) -> str:
        """The real text of ``[lo, hi)``."""
        text, pos = self.text, self.positions
        if not pos:
            return text[lo:hi]
        i, j = bisect_left(pos, lo), bisect_left(pos, hi)
        if i == j:
            return text[lo:hi]
        parts = []
        prev = lo
        chars = self.chars
        for k in range(i, j):
            p = pos[k]
            parts.append(text[prev:p])
            parts.append(chars[k])
            prev = p + 1
        parts.append(text[prev:hi])
        return "".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, max_share: float = SPARSE_MAX_SHARE) -> Chunk:
        """Decode UTF-8 (invalid bytes as one character each, ``surrogateescape``), sparse when at most
        ``max_share`` of the characters are not ASCII."""
        if data.isascii():
            return cls(data.decode("ascii"), data=data)
        # The ASCII decoder runs at memory speed and stops at the first other byte: it finds the lines that
        # hold one without a pass of our own over every byte. Those lines are decoded on their own (a newline
        # never sits inside a UTF-8 sequence, so they decode as they would in the whole) and put back with one
        # stand-in per character.
        n = len(data)
        limit = int(n * max_share)
        whole = memoryview(data)
        ascii_decode = codecs.ascii_decode
        find, rfind = data.find, data.rfind
        positions: list[int] = []
        chars: list[str] = []
        pieces: list[bytes | memoryview] = []
        prev = pos = 0
        shift = 0  # bytes given up so far: view offset = data offset - shift
        while pos < n:
            end = min(n, pos + _PROBE_BYTES)
            try:
                ascii_decode(whole[pos:end])
                pos = end
                continue
            except UnicodeDecodeError as exc:
                bad = pos + exc.start
            ls = rfind(b"\n", 0, bad) + 1
            le = find(b"\n", bad)
            le = n if le == -1 else le
            stand_ins = _stand_in_line(data[ls:le].decode("utf-8", "surrogateescape"), ls - shift, positions, chars)
            if len(positions) > limit:
                return cls(data.decode("utf-8", "surrogateescape"))
            pieces.append(whole[prev:ls])
            pieces.append(stand_ins)
            shift += (le - ls) - len(stand_ins)
            prev = pos = le
        pieces.append(whole[prev:])
        view = b"".join(pieces)
        return cls(view.decode("ascii"), positions, chars, view)


def _stand_in_line(line: str, base: int, positions: list[int], chars: list[str]) -> bytes:
    """``line`` with one stand-in byte for each non-ASCII character; the real ones go to ``chars``, their
    offsets (``base`` + offset in the line) to ``positions``. A real ``\\x1a`` is no stand-in."""
    stand_ins = line.encode("ascii", "redline-sub")
    p = stand_ins.find(b"\x1a")
    while p != -1:
        if line[p] != STAND_IN:
            positions.append(base + p)
            chars.append(line[p])
        p = stand_ins.find(b"\x1a", p + 1)
    return stand_ins


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
    the cost follows the number of escaped lines, not the size of the text. ``chunk`` is the view as a
    :class:`Chunk`: when the raw text is ASCII or sparse, the view stays so (``\\u4e2d`` decodes to a stand-in
    and its real character is kept aside), so that one escaped character does not widen the whole text.
    """

    __slots__ = ("_changed", "_line_maps", "_view_starts", "chunk", "identity", "raw", "text")

    def __init__(self, raw: str | Chunk, *, decode_json: bool = True, narrow: bool = True) -> None:
        source = raw if isinstance(raw, Chunk) else Chunk(raw)
        raw = source.text
        self.raw = raw
        self.identity = True
        self.text = raw
        self.chunk = source
        pos = raw.find("\\") if decode_json else -1
        if pos == -1:
            return
        # Keep the view one byte per character when the raw text is (a stand-in form of) ASCII.
        narrow = narrow and raw.isascii()
        # The byte view is built alongside when the source came with one (see Chunk.ascii_bytes).
        data = memoryview(source.data) if narrow and source.data is not None else None  # slices without copies
        bpieces: list[bytes | memoryview] = []
        limit = max(256, int(len(raw) * SPARSE_MAX_SHARE))
        old_pos, old_chars = source.positions, source.chars
        positions: list[int] = []
        chars: list[str] = []
        k = 0  # next real character of the raw chunk to carry over
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
            line = source.real(ls, le) if old_pos else raw[ls:le]
            decoded = _decode_line(line)
            if len(decoded) != len(line):
                vs = ls + shift
                while k < len(old_pos) and old_pos[k] < ls:
                    positions.append(old_pos[k] + shift)
                    chars.append(old_chars[k])
                    k += 1
                while k < len(old_pos) and old_pos[k] < le:
                    k += 1  # re-found in the decoded line below
                line_bytes: bytes | None = None
                if narrow and not decoded.isascii():
                    line_bytes = _stand_in_line(decoded, vs, positions, chars)
                    decoded = line_bytes.decode("ascii")
                    if len(positions) > limit:
                        # Escaped non-ASCII text throughout: patching it in would cost more than a wide text.
                        TextView.__init__(self, Chunk(source.real(0, len(raw))), decode_json=decode_json,
                                          narrow=False)
                        return
                if data is not None:
                    bpieces.append(data[prev:ls])
                    bpieces.append(line_bytes if line_bytes is not None else decoded.encode("ascii"))
                else:
                    pieces.append(raw[prev:ls])
                    pieces.append(decoded)
                changed.append((ls, le, vs, vs + len(decoded)))
                shift += len(decoded) - len(line)
                prev = le
            pos = find("\\", le)
        if not changed:
            return
        while k < len(old_pos):
            positions.append(old_pos[k] + shift)
            chars.append(old_chars[k])
            k += 1
        self.identity = False
        if data is not None:
            # One copy into the byte view, one into the text: slicing the text as well would copy it twice.
            bpieces.append(data[prev:])
            view = b"".join(bpieces)
            self.text = view.decode("ascii")
            self.chunk = Chunk(self.text, positions, chars, view)
        else:
            pieces.append(raw[prev:])
            self.text = "".join(pieces)
            self.chunk = Chunk(self.text, positions, chars)
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
