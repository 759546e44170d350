"""Redacting files and streams: plain lines stay lines, JSON lines stay JSON, gzip in gives gzip out.

Input is read in chunks that end at a newline (bounded memory), each chunk is scanned once, and only the lines
holding a finding are rewritten. A record is a line, or several lines when one finding spans them (a PEM key).
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from redline.engine import Finding, Scanner
from redline.redact.operators import Redactor, Replacement
from redline.redact.policy import Policy
from redline.redact.vault import Vault
from redline.scan.files import GZIP_MAGIC, ZSTD_MAGIC, InputError, open_source

CHUNK_CHARS = 1 << 20
_JSON_START = ("{", "[")


@dataclass
class Hit:
    """One replacement as reported by ``--check``: where, what type, and the engine's redacted snippet."""

    line: int
    kind: str
    type: str
    operator: str
    snippet: str


@dataclass
class RedactStats:
    bytes_in: int = 0
    chars: int = 0
    lines: int = 0
    records_changed: int = 0
    records_dropped: int = 0
    json_fallbacks: int = 0
    replacements: Counter[str] = field(default_factory=Counter)

    def add(self, other: RedactStats) -> None:
        self.bytes_in += other.bytes_in
        self.chars += other.chars
        self.lines += other.lines
        self.records_changed += other.records_changed
        self.records_dropped += other.records_dropped
        self.json_fallbacks += other.json_fallbacks
        self.replacements.update(other.replacements)

    @property
    def total(self) -> int:
        return sum(self.replacements.values()) + self.records_dropped


class StreamRedactor:
    """Redacts text chunk by chunk. ``vault_scope``: ``file`` (one vault per :meth:`new_scope`), ``record``
    (one per record) or ``run`` (one for the redactor's life)."""

    def __init__(self, scanner: Scanner, policy: Policy, *, vault_scope: str | None = None) -> None:
        self.scanner = scanner
        self.policy = policy
        self.redactor = Redactor(policy)
        self.vault_scope = vault_scope or policy.pseudonym_scope
        self.vault = Vault()
        self.stats = RedactStats()
        self.line = 1
        self.on_hit: Callable[[Hit], None] | None = None

    def new_scope(self) -> None:
        """Start a new file: a new vault when the scope is per file; line numbers restart."""
        if self.vault_scope == "file":
            self.vault = Vault()
        self.line = 1

    def redact_chunk(self, chunk: str, findings: list[Finding] | None = None) -> str:
        """Redact text made of whole lines (the last may lack its newline); ``findings``: the scanner's, when
        the caller has them already."""
        if findings is None:
            findings = self.scanner.scan_text(chunk)
        stats = self.stats
        stats.chars += len(chunk)
        nlines = chunk.count("\n")
        stats.lines += nlines + (0 if chunk.endswith("\n") or not chunk else 1)
        if not findings:
            self.line += nlines
            return chunk
        out: list[str] = []
        pos = 0
        first_line = self.line
        counted = 0  # newlines counted before `pos`
        for rs, re_, group in _records(chunk, findings):
            counted += chunk.count("\n", pos, rs)
            out.append(chunk[pos:rs])
            line_no = first_line + counted
            out.append(self._record(chunk[rs:re_], [f.shifted(-rs) for f in group], line_no))
            counted += chunk.count("\n", rs, re_)
            pos = re_
        out.append(chunk[pos:])
        self.line += nlines
        return "".join(out)

    def redact_stream(self, stream: IO[str] | IO[bytes], chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
        """The redacted text of a stream, chunk by chunk. The scanner cuts the chunks: a private key or a
        transcript that a chunk's end would cut through comes whole in the next one, so it is replaced
        whole, never left in the output in two unrecognised halves."""
        for chunk, findings, length in self.scanner.scan_chunks(stream, chunk_chars):
            yield self.redact_chunk(chunk.real(0, length), findings)

    def _record(self, rec: str, findings: list[Finding], line_no: int) -> str:
        vault = self.vault if self.vault_scope != "record" else Vault()
        res = self.redactor.redact(rec, findings, vault=vault)
        if res.dropped:
            self.stats.records_dropped += 1
            if self.on_hit is not None:
                f = findings[0]
                self.on_hit(Hit(line_no, f.kind, f.type, "drop", f.snippet))
            return ""
        if not res.replacements:
            return rec
        self.stats.records_changed += 1
        for r in res.replacements:
            self.stats.replacements[r.type] += 1
        if self.on_hit is not None:
            self._report(rec, findings, res.replacements, line_no)
        text = res.text
        body = rec.rstrip("\r\n")
        if body.lstrip().startswith(_JSON_START) and "\n" not in body:
            text = self._keep_json_valid(rec, text, vault)
        return text

    def _report(self, rec: str, findings: list[Finding], done: list[Replacement], line_no: int) -> None:
        assert self.on_hit is not None
        snippets = {(f.start, f.end): f for f in findings}
        for r in done:
            f = snippets.get((r.start, r.end))
            snippet = f.snippet if f is not None else ""
            self.on_hit(Hit(line_no + rec.count("\n", 0, r.start), r.kind, r.type, r.operator, snippet))

    def _keep_json_valid(self, original: str, redacted: str, vault: Vault) -> str:
        """A JSON line must stay valid JSON. Replacements are JSON-neutral, so this only fails when a finding
        crossed a string boundary; then the line is redacted value by value and re-serialised."""
        nl = original[len(original.rstrip("\r\n")):]
        try:
            json.loads(redacted)
            return redacted
        except ValueError:
            pass
        try:
            doc = json.loads(original)
        except ValueError:
            return redacted  # it was not JSON to begin with
        self.stats.json_fallbacks += 1
        clean = self._redact_values(doc, vault)
        return json.dumps(clean, ensure_ascii=False, separators=(",", ":")) + nl

    def _redact_values(self, doc: Any, vault: Vault) -> Any:
        if isinstance(doc, str):
            res = self.redactor.redact(doc, self.scanner.scan_text(doc), vault=vault)
            return "" if res.dropped else res.text
        if isinstance(doc, list):
            return [self._redact_values(v, vault) for v in doc]
        if isinstance(doc, dict):
            return {k: self._redact_values(v, vault) for k, v in doc.items()}
        return doc


def _records(chunk: str, findings: list[Finding]) -> Iterator[tuple[int, int, list[Finding]]]:
    """Group findings by the lines they touch: ``(start, end, findings)`` with whole lines, newline included."""
    cur_s = cur_e = -1
    group: list[Finding] = []
    n = len(chunk)
    for f in findings:
        ls = chunk.rfind("\n", 0, f.start) + 1
        le = chunk.find("\n", max(f.end - 1, f.start))
        le = n if le == -1 else le + 1
        if group and ls < cur_e:
            group.append(f)
            cur_e = max(cur_e, le)
            continue
        if group:
            yield cur_s, cur_e, group
        cur_s, cur_e, group = ls, le, [f]
    if group:
        yield cur_s, cur_e, group


# -- files ------------------------------------------------------------------------------------------------


def sniff_compression(path: str) -> str | None:
    """``gzip``, ``zstd`` or None, from the first bytes (stdin is peeked, not consumed)."""
    if path == "-":
        buf: Any = sys.stdin.buffer
        head = buf.peek(4)[:4] if hasattr(buf, "peek") else b""
    else:
        try:
            with open(path, "rb") as fh:
                head = fh.read(4)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


class OutputSink(AbstractContextManager["OutputSink"]):
    """Binary output, compressed like the input (gzip or zstd) or plain."""

    def __init__(self, target: BinaryIO, compression: str | None, *, close_target: bool) -> None:
        self._target = target
        self._close_target = close_target
        self.compression = compression
        self._stream: Any
        if compression == "gzip":
            import gzip

            self._stream = gzip.GzipFile(fileobj=target, mode="wb", compresslevel=6)
        elif compression == "zstd":
            import zstandard

            self._stream = zstandard.ZstdCompressor(level=3).stream_writer(target, closefd=False)
        else:
            self._stream = target

    def write(self, text: str) -> None:
        if text:
            self._stream.write(text.encode("utf-8", "surrogateescape"))

    def close(self) -> None:
        if self._stream is not self._target:
            self._stream.close()
        if self._close_target:
            self._target.close()
        else:
            self._target.flush()

    def __exit__(self, *exc: object) -> None:
        self.close()


def redact_source(redactor: StreamRedactor, path: str, sink: OutputSink | None,
                  chunk_chars: int = CHUNK_CHARS) -> RedactStats:
    """Redact one file (or ``-``) into ``sink`` (None: only count, for ``--check``); returns the running
    totals. Raises InputError."""
    stream, consumed = open_source(path)
    redactor.new_scope()
    try:
        peek = getattr(stream, "peek", None)
        if peek is not None and b"\x00" in peek(8192)[:8192]:
            raise InputError(f"{path}: looks binary; not redacted")
        for out in redactor.redact_stream(stream, chunk_chars):
            if sink is not None:
                sink.write(out)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: read failed: {exc}") from None
    except ValueError as exc:  # zstd/gzip corruption surfaces as ValueError in some versions
        raise InputError(f"{path}: read failed: {exc}") from None
    finally:
        redactor.stats.bytes_in += consumed() if path != "-" else 0
        if path != "-":
            stream.close()
    return redactor.stats


def redact_string(text: str, scanner: Scanner, policy: Policy) -> str:
    """Redact a whole text as ``redline redact`` would (one file scope)."""
    return "".join(StreamRedactor(scanner, policy).redact_stream(io.StringIO(text)))


def open_output(path: str | None, compression: str | None) -> OutputSink:
    if path is None or path == "-":
        return OutputSink(sys.stdout.buffer, compression, close_target=False)
    try:
        fh = open(path, "wb")  # noqa: SIM115 - closed by the sink
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return OutputSink(fh, compression, close_target=True)

