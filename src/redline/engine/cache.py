"""The engine's on-disk cache: where it lives, and a memo of facts derived from rule text.

Building the default scanner parses about a hundred rule files and derives, from every pattern, its width and
its Hyperscan forms: together most of a ``redline scan`` start-up. These are pure functions of their inputs
and of the engine's code, so they are kept on disk between runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import marshal
import os
import sys
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("redline.engine")

P = ParamSpec("P")
T = TypeVar("T")

MEMO_FILE = "memo.marshal"
# Beyond this many entries, a rewrite keeps only what its process used: user rule files that were edited
# many times would otherwise each leave their old facts behind.
_MEMO_MAX_ENTRIES = 20_000


def cache_dir() -> Path | None:
    """``$REDLINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/redline``, else ``~/.cache/redline``; empty disables."""
    env = os.environ.get("REDLINE_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "redline"


# Compiled Hyperscan databases kept (the most recently used): every rule change or rule selection (--kind,
# --disable, a user rule file) compiles a new pair, and nothing else would ever remove the old ones.
HS_CACHE_KEEP = 24


def touch(path: Path) -> None:
    """Mark a cache file as used (its modification time), so that pruning keeps it."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the ``keep`` most recently used files matching ``pattern``; errors are ignored (another
    process may be pruning too)."""
    try:
        files = sorted(folder.glob(pattern), key=lambda f: f.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()


def _engine_digest() -> bytes | None:
    """A digest of the engine's source files and of the Python version (the ``re`` parser and tomllib come
    with it): memoized facts are functions of both, so any change to either starts a fresh memo. None, and
    no memo on disk, when the sources cannot be read (an installation without ``.py`` files)."""
    here = Path(__file__)
    if here.suffix != ".py":
        return None
    digest = hashlib.sha256(sys.version.encode())
    try:
        for path in sorted(here.parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    except OSError:
        return None
    return digest.digest()


class Memo:
    """Facts that are pure functions of a key and of the engine's code, kept in one file (``path``).

    The file is read at the first lookup and rewritten atomically by :meth:`save`, only when something new
    was computed. It is written with ``marshal`` (plain values only: loading it runs no code) and holds the
    engine digest it was made with; a file that cannot be read, or was made by other engine code, is ignored
    and replaced. Values that ``marshal`` cannot store are simply not kept. Lookups are also memoized within
    the process, with or without a file.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stored: dict[Any, Any] | None = None
        self._used: dict[Any, Any] = {}
        self._new = 0

    def get(self, kind: str, key: Hashable, compute: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``compute(*args, **kwargs)``, which must depend on nothing but ``key`` (and the engine's code).
        Exceptions it raises pass through and are not memoized."""
        full = (kind, key)
        try:
            value: T = self._used[full]
            return value
        except KeyError:
            pass
        stored = self._load()
        if full in stored:
            value = stored[full]
        else:
            value = compute(*args, **kwargs)
            try:
                marshal.dumps(value)  # type: ignore[arg-type]  # finding out is the point
            except ValueError:
                return value
            self._new += 1
        self._used[full] = value
        return value

    def save(self) -> None:
        """Write the memo when something new was computed; a failure only costs the next run the time."""
        if not self._new or self.path is None:
            return
        self._new = 0
        stored = self._load()
        entries = self._used if len(stored) + len(self._used) > _MEMO_MAX_ENTRIES else {**stored, **self._used}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            data = marshal.dumps((_ENGINE_DIGEST, entries))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            tmp.replace(self.path)
        except (OSError, ValueError):
            log.debug("cannot write the memo %s", self.path)
            tmp.unlink(missing_ok=True)
        self._stored = entries

    def _load(self) -> dict[Any, Any]:
        if self._stored is None:
            self._stored = {}
            if self.path is not None and _ENGINE_DIGEST is not None:
                try:
                    digest, entries = marshal.loads(self.path.read_bytes())
                    if digest == _ENGINE_DIGEST and isinstance(entries, dict):
                        self._stored = entries
                except FileNotFoundError:
                    pass
                except Exception:  # damaged or from another Python: ignored, and replaced at the next save
                    log.debug("ignoring unreadable memo %s", self.path)
        return self._stored


_ENGINE_DIGEST = _engine_digest()
_memo = Memo(None)
_memo_env: tuple[str | None, ...] = ()


def memo() -> Memo:
    """The memo in the current cache directory (a new one when the environment names another)."""
    global _memo, _memo_env
    env = tuple(map(os.environ.get, ("REDLINE_CACHE_DIR", "XDG_CACHE_HOME", "HOME")))
    if env != _memo_env:
        folder = cache_dir() if _ENGINE_DIGEST is not None else None
        path = folder / MEMO_FILE if folder is not None else None
        if path != _memo.path or not _memo_env:
            _memo = Memo(path)
        _memo_env = env
    return _memo
