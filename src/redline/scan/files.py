"""Scanning files, folders, compressed logs and stdin with bounded memory.

Files are read in chunks that end at a newline, decompressed on the fly (gzip, zstd), and each chunk goes
through the engine once. Findings become records located by path, line and column.
"""

from __future__ import annotations

import fnmatch
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from redline.engine import Chunk, Finding, Scanner
from redline.engine.scanner import STREAM_CHUNK_CHARS

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SNIFF_BYTES = 8192
DEFAULT_EXCLUDES = (".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".mypy_cache", ".tox")


class InputError(Exception):
    """A path that cannot be scanned; the message says which and why."""


@dataclass
class FileResult:
    path: str
    records: list[dict[str, Any]] = field(default_factory=list)
    bytes_read: int = 0
    chars: int = 0
    skipped: str | None = None
    error: str | None = None


def iter_paths(paths: Iterable[str], excludes: Iterable[str] = ()) -> Iterator[str | InputError]:
    """Expand folders recursively; yields file paths (and '-' for stdin) or InputError for bad paths."""
    patterns = list(excludes)

    def excluded(p: Path) -> bool:
        s = p.as_posix()
        return any(fnmatch.fnmatch(s, pat) or fnmatch.fnmatch(p.name, pat) for pat in patterns)

    for raw in paths:
        if raw == "-":
            yield "-"
            continue
        p = Path(raw)
        if not p.exists():
            yield InputError(f"{raw}: no such file or folder")
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if d not in DEFAULT_EXCLUDES and not excluded(Path(root, d)))
                for name in sorted(files):
                    fp = Path(root, name)
                    if not excluded(fp) and not fp.is_symlink():
                        yield str(fp)
        elif not excluded(p):
            yield str(p)


def open_source(path: str) -> tuple[BinaryIO, Callable[[], int]]:
    """Open a file (or stdin) for binary reading, transparently decompressing gzip and zstd.

    Returns the stream and a function giving the compressed bytes consumed so far (for progress).
    """
    raw: BinaryIO
    if path == "-":
        raw = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed there
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    head = buffered.peek(4)[:4]

    def consumed() -> int:
        try:
            return raw.tell() if path != "-" else 0
        except OSError:
            return 0

    if head.startswith(GZIP_MAGIC):
        import gzip

        gz: Any = gzip.GzipFile(fileobj=buffered, mode="rb")
        return gz, consumed
    if head.startswith(ZSTD_MAGIC):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return reader, consumed
    stream: BinaryIO = buffered
    return stream, consumed


class _SafeReader:
    """Reads in small pieces and turns a read error into end of input, remembering it, so everything before a
    truncated or corrupt part of a compressed log is still scanned and reported."""

    def __init__(self, stream: BinaryIO, piece: int = 256 * 1024) -> None:
        self.stream = stream
        self.piece = piece
        self.error: Exception | None = None

    def read(self, n: int = -1) -> bytes:
        out: list[bytes] = []
        want = n if n >= 0 else 1 << 62
        while want > 0 and self.error is None:
            try:
                data = self.stream.read(min(want, self.piece))
            except Exception as exc:  # gzip/zstd/OS errors differ in type; all mean "stop here"
                self.error = exc
                break
            if not data:
                break
            out.append(data)
            want -= len(data)
        return b"".join(out)


def _looks_binary(stream: BinaryIO) -> bool:
    peek = getattr(stream, "peek", None)
    head = peek(SNIFF_BYTES)[:SNIFF_BYTES] if peek else b""
    return b"\x00" in head


class _LineIndex:
    """Maps offsets in a chunk to (line, column). Findings come in text order, so newlines are counted from
    the previous offset asked about (in C), not indexed for the whole chunk."""

    def __init__(self, text: str, first_line: int) -> None:
        self.text = text
        self._pos = 0
        self._line = first_line
        self.first_line = first_line

    def locate(self, offset: int) -> tuple[int, int]:
        text = self.text
        if offset >= self._pos:
            self._line += text.count("\n", self._pos, offset)
        else:  # a finding inside a chat span, or the start after the previous end
            self._line -= text.count("\n", offset, self._pos)
        self._pos = offset
        return self._line, offset - (text.rfind("\n", 0, offset) + 1)

    def lines(self, end: int) -> int:
        """Newlines before ``end``, counting on from the last offset asked about."""
        return self._line - self.first_line + self.text.count("\n", self._pos, end)


def finding_record(
    f: Finding, path: str, index: _LineIndex, chunk: Chunk, *, reveal: bool
) -> dict[str, Any]:
    line, col = index.locate(f.start)
    end_line, end_col = index.locate(f.end)
    rec: dict[str, Any] = {
        "path": path,
        "line": line,
        "column": col + 1,
        "start": col,
        "end": end_col if end_line == line else col + (f.end - f.start),
        "kind": f.kind,
        "type": f.type,
        "confidence": f.confidence,
        "fingerprint": f.fingerprint,
        "snippet": f.snippet,
    }
    if end_line != line:
        rec["end_line"] = end_line
        rec["end_column"] = end_col
        rec["end"] = end_col
    if reveal:
        rec["value"] = chunk.real(f.start, f.end)
    return rec


def scan_stream_records(
    scanner: Scanner,
    stream: IO[bytes],
    path: str,
    *,
    reveal: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    line = 1
    for chunk, findings, length in scanner.scan_chunks(stream):
        if findings:
            index = _LineIndex(chunk.text, line)
            for f in findings:
                yield finding_record(f, path, index, chunk, reveal=reveal)
            line += index.lines(length)
        else:
            line += chunk.text.count("\n", 0, length)
        if on_chunk is not None:
            on_chunk(length)


def scan_file(
    scanner: Scanner,
    path: str,
    *,
    reveal: bool = False,
    sink: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> FileResult:
    """Scan one file. Records go to ``sink`` as they are found when given, else into the result."""
    result = FileResult(path)
    try:
        stream, consumed = open_source(path)
    except InputError as exc:
        result.error = str(exc)
        return result
    last = 0

    def progress(n: int) -> None:
        nonlocal last
        result.chars += n
        pos = consumed()
        if on_progress is not None and pos > last:
            on_progress(pos - last)
        last = pos

    try:
        if _looks_binary(stream):
            result.skipped = "binary"
            return result
        # Plain files are read in whole chunks; decompressors in small pieces, so that a damaged tail costs
        # only the piece it is in.
        plain = isinstance(stream, io.BufferedReader)
        reader = _SafeReader(stream, piece=STREAM_CHUNK_CHARS if plain else 256 * 1024)
        for rec in scan_stream_records(scanner, reader, path, reveal=reveal, on_chunk=progress):  # type: ignore[arg-type]
            if sink is not None:
                sink(rec)
            else:
                result.records.append(rec)
        if reader.error is not None:
            # Truncated gzip/zstd or a read error: what came before was scanned and reported.
            result.error = f"{path}: read failed after {result.chars} characters: {reader.error}"
    except OSError as exc:
        result.error = f"{path}: read failed: {exc}"
    finally:
        result.bytes_read = consumed() if path != "-" else result.chars
        if path != "-":
            stream.close()
    return result


# -- parallel scanning across files ---------------------------------------------------------------------

_WORKER: Scanner | None = None
_WORKER_REVEAL = False


def _init_worker(scanner_kwargs: dict[str, Any], reveal: bool) -> None:
    global _WORKER, _WORKER_REVEAL
    _WORKER = Scanner(**scanner_kwargs)
    _WORKER_REVEAL = reveal


def _scan_in_worker(path: str) -> FileResult:
    assert _WORKER is not None
    return scan_file(_WORKER, path, reveal=_WORKER_REVEAL)


def scan_files_parallel(
    paths: list[str], scanner_kwargs: dict[str, Any], jobs: int, *, reveal: bool = False
) -> Iterator[FileResult]:
    """Scan files across ``jobs`` processes; results come back in input order."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver" if sys.platform != "win32" else "spawn")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(scanner_kwargs, reveal)) as pool:
        yield from pool.imap(_scan_in_worker, paths, chunksize=1)
