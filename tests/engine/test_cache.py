"""The on-disk memo of facts derived from rules: a damaged or missing file never changes what is found."""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from redline.engine import Finding, Rule, Scanner, builtin_rules
from redline.engine.cache import MEMO_FILE, Memo

from ..conftest import BACKENDS, KEY

DAMAGED = [
    b"",
    b"not a marshal stream",
    marshal.dumps(("a" * 32, {("width", "x"): 1}))[:-3],  # cut short
    marshal.dumps(("another engine", {("width", "abc"): 99})),  # written by other engine code
    marshal.dumps(["not", "a", "pair"]),
]


def _not_computed() -> int:
    raise AssertionError("computed, though the memo file holds it")


@pytest.mark.parametrize("content", DAMAGED)
def test_damaged_memo_file_is_ignored_and_replaced(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / MEMO_FILE
    path.write_bytes(content)
    memo = Memo(path)
    assert memo.get("width", "abc", len, "abc") == 3
    memo.save()
    assert Memo(path).get("width", "abc", _not_computed) == 3


def _findings(backend: str) -> list[list[Finding]]:
    # A slice of the built-in rules keeps the Hyperscan databases quick to compile in a fresh cache directory.
    rules: list[Rule] = builtin_rules()[::6]
    scanner = Scanner(rules, backend=backend, fingerprint_key=KEY)
    texts = [ex.text for r in rules for ex in r.examples] + [t for r in rules for t in r.negative_examples]
    return [scanner.scan_text(t) for t in texts]


@pytest.mark.parametrize("backend", BACKENDS)
def test_findings_do_not_depend_on_the_memo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backend: str) -> None:
    monkeypatch.setenv("REDLINE_CACHE_DIR", "")  # no memo file at all
    expected = _findings(backend)
    assert any(expected)
    for k, content in enumerate(DAMAGED):
        damaged, copy = tmp_path / f"damaged-{k}", tmp_path / f"copy-{k}"
        damaged.mkdir()
        (damaged / MEMO_FILE).write_bytes(content)
        monkeypatch.setenv("REDLINE_CACHE_DIR", str(damaged))
        assert _findings(backend) == expected  # the damaged file is ignored, and replaced
        copy.mkdir()
        shutil.copy(damaged / MEMO_FILE, copy / MEMO_FILE)
        written = (copy / MEMO_FILE).read_bytes()
        monkeypatch.setenv("REDLINE_CACHE_DIR", str(copy))
        assert _findings(backend) == expected  # read back by a new memo ...
        assert (copy / MEMO_FILE).read_bytes() == written  # ... which found everything in it


def test_bad_patterns_are_reported_with_a_warm_memo(tmp_path: Path) -> None:
    """Only patterns that compiled are memoized: a bad one is reported every time, with its file and line."""
    rule_file = tmp_path / "bad.toml"
    rule_file.write_text("[[rules]]\nid='a'\nname='a'\nkind='pii'\nconfidence='high'\npattern='(x'\nexamples=['x']\n")
    script = (
        "import sys\n"
        "from redline.engine import RuleError, load_rule_paths\n"
        "from redline.engine.cache import memo\n"
        "try:\n"
        "    load_rule_paths([sys.argv[1]])\n"
        "except RuleError as exc:\n"
        "    print(exc)\n"
        "memo().save()\n"  # keeps the file's parsed TOML for the next run
    )
    env = {**os.environ, "REDLINE_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script, str(rule_file)], env=env, capture_output=True, text=True,
                             check=True).stdout
        assert out.startswith(f"{rule_file}:2: rule 'a': pattern does not compile")
        assert (tmp_path / "cache" / MEMO_FILE).is_file()


def test_hyperscan_cache_keeps_only_the_most_recently_used_databases(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hyperscan")
    from redline.engine.cache import HS_CACHE_KEEP

    monkeypatch.setenv("REDLINE_CACHE_DIR", str(tmp_path))
    stale = []
    for k in range(HS_CACHE_KEEP + 10):
        f = tmp_path / f"hs-{k:032x}.db"
        f.write_bytes(b"old")
        os.utime(f, (1_000_000 + k, 1_000_000 + k))
        stale.append(f)
    rules = [r for r in builtin_rules() if r.id in ("aws-access-key-id", "email-address")]
    Scanner(rules, backend="hyperscan")  # compiles (new rule set) and writes its databases
    left = sorted(tmp_path.glob("hs-*.db"))
    assert len(left) == HS_CACHE_KEEP
    assert not stale[0].exists() and stale[-1].exists()  # the oldest went, the newest stayed
    fresh = [f for f in left if f not in stale]
    assert fresh  # what was just written is kept
    # Loading a database marks it as used, so a later pruning keeps it over older ones.
    os.utime(fresh[0], (1, 1))
    Scanner(rules, backend="hyperscan")
    assert fresh[0].stat().st_mtime > 1_000_000
