"""Run the side-by-side HTTP benchmark: ours vs the Flask quickstarts, Auth0's Node middleware, the
stock gthread worker and a bare gunicorn hello.

Usage (from the repo root; `bench/run` installs wrk and the node deps first):
    python -m bench.runner [--duration 10] [--runs 3] [--connections 16] [--quick] ...
See docs/performance.md for how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import procstat
from bench.material import AUDIENCE
from bench.material import Material
from bench.material import prepare
from service.config import ENV_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "wrk" / "bench.lua"
VENV_BIN = Path(sys.executable).parent
ALL_TARGETS = ("ours", "ours_gthread", "quickstart_docs", "quickstart", "hello", "node", "baseline")
DEFAULT_TARGETS = ("ours", "ours_gthread", "quickstart_docs", "quickstart", "hello")
#: Targets that serve only some scenarios (the hello answers every path with 200).
ONLY_SCENARIOS = {"hello": frozenset({"public"})}


@dataclass(frozen=True)
class Scenario:
    """One kind of traffic: a path, an optional token file and the status every request gets."""

    name: str
    path: str
    tokens: str | None
    expect: int
    label: str


SCENARIOS = (
    Scenario("public", "/api/public", None, 200, "public"),
    Scenario("private_hot", "/api/private", "hot", 200, "private, one hot token"),
    Scenario("private_cold", "/api/private", "cold", 200, "private, cold (distinct) tokens"),
    Scenario("private_scoped", "/api/private-scoped", "hot", 200, "private-scoped, hot token"),
    Scenario("bad_signature", "/api/private", "badsig", 401, "bad signature (distinct)"),
    Scenario("unknown_kid", "/api/private", "unknownkid", 401, "unknown kid flood (distinct)"),
    Scenario("no_token", "/api/private", None, 401, "no token"),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}

# (name, numerator target, numerator scenario, denominator target, denominator scenario, goal)
RATIOS = (
    ("ours hot private / ours public", "ours", "private_hot", "ours", "public", ">= 0.90"),
    ("ours cold private / ours public", "ours", "private_cold", "ours", "public", ">= 0.70"),
    ("ours bad-signature / ours public", "ours", "bad_signature", "ours", "public", ">= 0.85"),
    ("ours unknown-kid / ours public", "ours", "unknown_kid", "ours", "public", ">= 0.85"),
    # The hardened worker against gunicorn's stock gthread worker, same app and settings.
    ("ours public / ours -k gthread public", "ours", "public", "ours_gthread", "public", ">= 0.95"),
    ("ours hot private / ours -k gthread hot private", "ours", "private_hot", "ours_gthread",
     "private_hot", ">= 0.95"),
    ("ours public / baseline public", "ours", "public", "baseline", "public", ""),
    ("ours hot private / baseline hot private", "ours", "private_hot", "baseline", "private_hot", ""),
    ("ours hot private / bare gunicorn hello", "ours", "private_hot", "hello", "public", ">= 0.5"),
    ("ours hot private / docs quickstart hot private", "ours", "private_hot", "quickstart_docs",
     "private_hot", ">= 1.3"),
    ("ours hot private / quickstart hot private", "ours", "private_hot", "quickstart", "private_hot",
     ">= 1.3"),
    ("ours cold private / quickstart cold private", "ours", "private_cold", "quickstart",
     "private_cold", ">= 1.5"),
    ("ours hot private / node hot private", "ours", "private_hot", "node", "private_hot", ">= 1.0"),
    ("ours cold private / node cold private", "ours", "private_cold", "node", "private_cold", ">= 1.0"),
    ("quickstart private / quickstart public", "quickstart", "private_hot", "quickstart", "public", ""),
    ("node private / quickstart private", "node", "private_hot", "quickstart", "private_hot", ""),
)


@dataclass
class Target:
    """A server under test: how to start it, and its live process group."""

    name: str
    command: list[str]
    cwd: Path
    env: dict[str, str]
    jwks_tag: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    workers: list[int] = field(default_factory=list)

    def serves(self, scenario: Scenario) -> bool:
        """Whether this target is measured on a scenario."""
        only = ONLY_SCENARIOS.get(self.name)
        return only is None or scenario.name in only

    @property
    def base(self) -> str:
        """Return the target's loopback base URL."""
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """Return the live process tree (master/primary and workers)."""
        assert self.proc is not None
        return procstat.descendants(self.proc.pid)


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, token: str | None = None, timeout: float = 5.0) -> int:
    """GET a URL and return the status (any status, no exception for 4xx/5xx)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        err.read()
        return int(err.code)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Return this process's environment without settings that would steer a target, plus extra."""
    # Ours' variables (one declaration in service.config), gunicorn's own, and node's mode.
    drop = ENV_VARIABLES | {"GUNICORN_CMD_ARGS", "NODE_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def http_parser() -> str:
    """The gunicorn HTTP parser every gunicorn target gets: the C one where it is installed."""
    return "fast" if importlib.util.find_spec("gunicorn_h1c") is not None else "python"


def _gthread(args: argparse.Namespace, port: int) -> list[str]:
    """gunicorn flags the stock targets share: gthread, workers, threads, loopback, one parser."""
    command = [
        str(VENV_BIN / "gunicorn"),
        "--workers",
        str(args.workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(args.threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--http-parser",
        http_parser(),
    ]
    if Path("/dev/shm").is_dir():
        command += ["--worker-tmp-dir", "/dev/shm"]
    return command


def build_targets(args: argparse.Namespace, issuer: str, logdir: Path) -> list[Target]:
    """Describe the selected targets (not started yet)."""
    jwks = f"{issuer}.well-known/jwks.json"
    targets = []
    for name in args.targets:
        port = free_port()
        log_path = logdir / f"{name}.log"
        if name in ("ours", "ours_gthread", "baseline"):
            multiproc = Path(tempfile.mkdtemp(prefix="bench-prom-"))
            env = {
                "AUTH0_ISSUER": issuer,
                "AUTH0_AUDIENCE": AUDIENCE,
                # Same issuer and key set; the tag only lets the bench issuer count our fetches.
                "AUTH0_JWKS_URI": f"{jwks}?client={name}",
                "WEB_CONCURRENCY": str(args.workers),
                "GUNICORN_THREADS": str(args.threads),
                "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "info",
            }
            env.update(dict(item.split("=", 1) for item in args.ours_env))
            command = [
                str(VENV_BIN / "gunicorn"),
                "-c",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--http-parser",
                http_parser(),
            ]
            if name == "ours_gthread":
                # The same app, settings and hooks on gunicorn's stock worker: what ours' costs.
                command += ["--worker-class", "gthread"]
            # baseline: ours from another checkout (--baseline DIR), for before/after in one run.
            cwd = args.baseline if name == "baseline" else ROOT
            targets.append(Target(name, command, cwd, clean_env(env), name, port, log_path))
        elif name == "hello":
            command = [*_gthread(args, port), "hello:app"]
            targets.append(Target(name, command, BENCH / "hello", clean_env({}), "untagged", port, log_path))
        elif name in ("quickstart", "quickstart_docs"):
            module = "server:APP" if name == "quickstart" else "server_docs:APP"
            command = [*_gthread(args, port), module]
            env = {"AUTH0_ISSUER": issuer, "API_IDENTIFIER": AUDIENCE}
            # cwd is the quickstart folder, so gunicorn never picks up our ./gunicorn.conf.py.
            targets.append(
                Target(
                    name,
                    command,
                    BENCH / "quickstart",
                    clean_env(env),
                    "untagged",
                    port,
                    log_path,
                )
            )
        elif name == "node":
            env = {
                "PORT": str(port),
                "WORKERS": str(args.workers),
                "ISSUER_BASE_URL": issuer,
                "AUDIENCE": AUDIENCE,
                "JWKS_URI": f"{jwks}?client=node",
            }
            command = ["node", "server.js"]
            targets.append(Target(name, command, BENCH / "node", clean_env(env), "node", port, log_path))
    return targets


def code_fingerprint() -> str:
    """Hash ours' code and config, so a report can tell if the service changed between runs."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "service").rglob("*.py")) + [ROOT / "gunicorn.conf.py"]:
        if path.exists():
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def start(target: Target) -> None:
    """Start a target in its own session so it can be stopped as a group."""
    log = target.log_path.open("ab")
    target.proc = subprocess.Popen(
        target.command,
        cwd=target.cwd,
        env=target.env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()


def wait_ready(target: Target, workers: int, timeout: float = 60.0) -> None:
    """Wait until the target answers /api/public and has all its workers."""
    assert target.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            tail = target.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{target.name} exited with {target.proc.returncode}:\n{tail}")
        try:
            if http_status(target.base + "/api/public", timeout=1.0) == 200:
                kids = procstat.children_map().get(target.proc.pid, [])
                if len(kids) >= workers:
                    target.workers = sorted(kids)
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{target.name} not ready after {timeout:.0f}s; see {target.log_path}")


def stop(target: Target) -> None:
    """SIGTERM the target's process group, SIGKILL it if still there after 15 s."""
    if target.proc is None:
        return
    try:
        # The group is the one start() created for this target; workers may outlive a dead master.
        os.killpg(target.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        target.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(target.proc.pid, signal.SIGKILL)
        target.proc.wait(timeout=5)


def keep_log_tail(target: Target, outdir: Path, label: str, lines: int = 300) -> None:
    """Copy the end of a target's log next to the results, for a look at what went wrong."""
    try:
        tail = target.log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    dest = outdir / "logs" / f"{target.name}-{label}.log"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text("\n".join(tail) + "\n")


def issuer_stats(issuer: str) -> dict[str, int]:
    """Return the dev issuer's JWKS fetch counters per ?client= tag."""
    with urllib.request.urlopen(issuer + "stats", timeout=5) as response:
        return dict(json.loads(response.read()))


def start_issuer(port: int, issuer: str, material: Material) -> subprocess.Popen[bytes]:
    """Start the dev issuer on a loopback port that must be free, and wait until it answers."""
    with socket.socket() as sock:
        # SO_REUSEADDR as the server itself uses it: TIME_WAIT leftovers must not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(f"port {port} is busy: pass --issuer-port") from None
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEV_ISSUER_")}
    env.update(
        {
            "DEV_ISSUER_PORT": str(port),
            "DEV_ISSUER_URL": issuer,
            "DEV_ISSUER_AUDIENCE": material.audience,
            "DEV_ISSUER_KEY_FILE": str(material.key_path),
            # Auth0 answers the JWKS with a max-age; 600 s outlasts every scenario.
            "DEV_ISSUER_JWKS_MAX_AGE": "600",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "dev_issuer"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(200):
        try:
            issuer_stats(issuer)
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.terminate()
    proc.wait(timeout=10)
    raise RuntimeError(f"dev issuer did not start on port {port}")


def run_wrk(
    args: argparse.Namespace, target: Target, scenario: Scenario, material: Material, duration: float
) -> tuple[dict[str, Any], float]:
    """Run wrk once; return its summary and the CPU seconds wrk itself used."""
    token_file = str(material.tokens(scenario.tokens)) if scenario.tokens else "-"
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        target.base,
        "--",
        scenario.path,
        token_file,
        str(args.wrk_threads),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line.removeprefix("BENCH_JSON ")), wrk_cpu
    raise RuntimeError(f"wrk gave no summary (rc={done.returncode}):\n{done.stdout}\n{done.stderr}")


def precheck(target: Target, material: Material) -> dict[str, int]:
    """Send one request per scenario and return the statuses (checked against expectations)."""
    statuses = {}
    for scenario in filter(target.serves, SCENARIOS):
        token = material.first(scenario.tokens) if scenario.tokens else None
        statuses[scenario.name] = http_status(target.base + scenario.path, token)
    return statuses


@dataclass(frozen=True)
class Watched:
    """What one measurement watches: the target's processes, the others', the issuer's counters."""

    target: Target
    issuer: str
    own: list[int]
    workers: list[int]
    others: list[int]

    def readers(self) -> list[tuple[str, Callable[[], Any]]]:
        """Counter readers, slowest first: read in this order before a run, in reverse after it."""
        return [
            ("log_bytes", lambda: self.target.log_path.stat().st_size),
            ("fetches", lambda: issuer_stats(self.issuer).get(self.target.jwks_tag, 0)),
            ("loadavg", procstat.loadavg),
            ("machine", procstat.MachineCPU.read),
            ("own_cpu", lambda: procstat.cpu_seconds(self.own)),
            ("own_system_cpu", lambda: procstat.cpu_split(self.own)[1]),
            ("switches", lambda: procstat.context_switches(self.own)),
            ("per_worker_cpu", lambda: [procstat.cpu_seconds([pid]) for pid in self.workers]),
            ("others_cpu", lambda: procstat.cpu_seconds(self.others)),
            ("self_cpu", lambda: sum(os.times()[:2])),
            ("wall", time.monotonic),
        ]


@dataclass(frozen=True)
class Snapshot:
    """Every counter at one instant; two snapshots around a run give what the run cost."""

    log_bytes: int
    fetches: int
    loadavg: float
    machine: procstat.MachineCPU
    own_cpu: float
    own_system_cpu: float
    switches: int
    per_worker_cpu: list[float]
    others_cpu: float
    self_cpu: float
    wall: float

    @classmethod
    def take(cls, watched: Watched, *, closing: bool = False) -> Snapshot:
        """Read every counter, the clocks nearest the run (last before it, first after it)."""
        readers = watched.readers()
        return cls(**{name: read() for name, read in (reversed(readers) if closing else readers)})


def measure(
    args: argparse.Namespace,
    target: Target,
    everyone: list[Target],
    scenario: Scenario,
    material: Material,
    issuer: str,
    extra_pids: list[int],
) -> dict[str, Any]:
    """Run one scenario against one target and collect throughput, latency, CPU and memory."""
    assert target.proc is not None
    root = target.proc.pid
    tree = procstat.children_map()
    own = procstat.descendants(root, tree)
    others = [
        p for t in everyone if t is not target and t.proc for p in procstat.descendants(t.proc.pid, tree)
    ]
    workers = [p for p in own if p != root]
    for pid in workers:
        procstat.reset_peak_rss(pid)
    watched = Watched(target, issuer, own, workers, others + extra_pids)
    before = Snapshot.take(watched)

    summary, wrk_cpu = run_wrk(args, target, scenario, material, args.duration)

    after = Snapshot.take(watched, closing=True)
    wall = after.wall - before.wall
    self_cpu = after.self_cpu - before.self_cpu
    own_cpu = after.own_cpu - before.own_cpu
    switches = after.switches - before.switches
    system_cpu = after.own_system_cpu - before.own_system_cpu
    per_worker = [a - b for a, b in zip(after.per_worker_cpu, before.per_worker_cpu, strict=True)]
    others_cpu = after.others_cpu - before.others_cpu
    fetches = after.fetches - before.fetches
    log_bytes = after.log_bytes - before.log_bytes
    peaks = [procstat.peak_rss_kib(pid) for pid in workers]
    live_workers = procstat.children_map().get(root, [])

    requests = int(summary["requests"])
    seconds = summary["duration_us"] / 1e6
    machine_busy = (after.machine.busy - before.machine.busy) / procstat.CLK_TCK
    machine_total = (after.machine.total - before.machine.total) / procstat.CLK_TCK
    steal = (after.machine.steal - before.machine.steal) / procstat.CLK_TCK
    # Whatever the machine did beyond the target, wrk, the idle other targets, the issuer and us.
    other = max(0.0, machine_busy - own_cpu - wrk_cpu - others_cpu - self_cpu)
    non2xx = int(summary["errors"]["status"])
    socket_errors = sum(int(v) for k, v in summary["errors"].items() if k != "status")
    if scenario.expect < 400:
        statuses_ok = non2xx == 0
    else:
        statuses_ok = non2xx == requests
    return {
        "target": target.name,
        "scenario": scenario.name,
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": summary["latency_us"]["p50"] / 1000,
        "p90_ms": summary["latency_us"]["p90"] / 1000,
        "p99_ms": summary["latency_us"]["p99"] / 1000,
        "mean_ms": round(summary["latency_us"]["mean"] / 1000, 3),
        "max_ms": summary["latency_us"]["max"] / 1000,
        "non_2xx": non2xx,
        "socket_errors": socket_errors,
        "statuses_ok": statuses_ok and socket_errors == 0,
        "cpu_us_per_req": round(own_cpu * 1e6 / requests, 1) if requests else None,
        "target_cpu_cores": round(own_cpu / wall, 3),
        "target_system_cpu_pct": round(100 * system_cpu / own_cpu, 1) if own_cpu else None,
        # Threads' context switches per request: GIL hand-offs and I/O waits show up here.
        "ctx_switches_per_req": round(switches / requests, 2) if requests else None,
        "wrk_cpu_cores": round(wrk_cpu / wall, 3),
        # How evenly the workers shared the work (gunicorn workers accept greedily).
        "worker_cpu_share": sorted(
            (round(c / own_cpu, 2) if own_cpu else 0.0 for c in per_worker), reverse=True
        ),
        "other_cpu_cores": round(other / wall, 3),
        "machine_cores_busy": round(machine_busy / wall, 3),
        "machine_cores": round(machine_total / wall, 2),
        "steal_pct": round(100 * steal / machine_total, 2) if machine_total else 0.0,
        "loadavg_before": before.loadavg,
        "loadavg_after": after.loadavg,
        "peak_rss_kib_per_worker": peaks,
        "workers_restarted": sorted(live_workers) != sorted(workers),
        "jwks_fetches": fetches,
        "log_bytes_per_req": round(log_bytes / requests, 1) if requests else None,
        "tokens_wrapped": bool(scenario.tokens not in (None, "hot") and requests > material.count),
    }


def median(values: list[float]) -> float | None:
    """Return the median of the non-missing values."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(samples: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """Reduce per-run samples to medians per target and scenario, and per-run ratios to medians."""
    table: dict[str, dict[str, Any]] = {}
    keys = (
        "rps",
        "p50_ms",
        "p99_ms",
        "cpu_us_per_req",
        "log_bytes_per_req",
        "other_cpu_cores",
        "target_cpu_cores",
        "wrk_cpu_cores",
        "steal_pct",
    )
    for s in samples:
        table.setdefault(s["target"], {}).setdefault(s["scenario"], []).append(s)
    medians: dict[str, dict[str, Any]] = {}
    for target, per_scenario in table.items():
        for scenario, rows in per_scenario.items():
            entry: dict[str, Any] = {k: median([r[k] for r in rows]) for k in keys}
            peaks = [p for r in rows for p in r["peak_rss_kib_per_worker"] if p is not None]
            entry["peak_rss_mib_per_worker"] = round(max(peaks) / 1024, 1) if peaks else None
            entry["statuses_ok"] = all(r["statuses_ok"] for r in rows)
            entry["jwks_fetches"] = sum(r["jwks_fetches"] for r in rows)
            entry["tokens_wrapped"] = any(r["tokens_wrapped"] for r in rows)
            entry["runs"] = len(rows)
            medians.setdefault(target, {})[scenario] = entry
    ratios = []
    for name, nt, ns, dt, ds, goal in RATIOS:
        per_run, by_cpu = [], []
        for run in range(runs):
            num = [s for s in samples if (s["run"], s["target"], s["scenario"]) == (run, nt, ns)]
            den = [s for s in samples if (s["run"], s["target"], s["scenario"]) == (run, dt, ds)]
            if num and den and den[0]["rps"]:
                per_run.append(num[0]["rps"] / den[0]["rps"])
            if num and den and num[0]["cpu_us_per_req"] and den[0]["cpu_us_per_req"]:
                # Capacity ratio: requests per CPU-second. Robust to neighbours stealing cores.
                by_cpu.append(den[0]["cpu_us_per_req"] / num[0]["cpu_us_per_req"])
        if per_run:
            ratios.append(
                {
                    "ratio": name,
                    "median": round(statistics.median(per_run), 3),
                    "per_run": [round(v, 3) for v in per_run],
                    "median_by_cpu": round(statistics.median(by_cpu), 3) if by_cpu else None,
                    "per_run_by_cpu": [round(v, 3) for v in by_cpu],
                    "goal": goal,
                }
            )
    return {"medians": medians, "ratios": ratios}


def tool_version(command: list[str]) -> str:
    """Return the first line a tool prints about its version, or 'missing'."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""


def machine_info() -> dict[str, Any]:
    """Describe the machine and tools, for the report header."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": tool_version(["node", "--version"]),
        "wrk": tool_version(["wrk", "--version"]).split(" [")[0],
        "gunicorn": tool_version([str(VENV_BIN / "gunicorn"), "--version"]),
        "git": git if len(git) < 20 else "none",
    }


def fmt(value: Any, digits: int = 1) -> str:
    """Format a number for the table (— when missing)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """Render the report as markdown tables."""
    cfg = report["config"]
    lines = [
        f"# Benchmark {report['started']}",
        "",
        f"`{report['command']}` — {cfg['runs']} run(s) × {cfg['duration']} s per scenario and "
        f"target, wrk -t{cfg['wrk_threads']} -c{cfg['connections']}, {cfg['workers']} workers "
        f"(gunicorn gthread × {cfg['threads']} threads, {cfg.get('http_parser', '?')} HTTP parser "
        f"for every gunicorn target; node cluster), {cfg['tokens']} distinct "
        "tokens per list. Medians over runs.",
        "",
        f"Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores), "
        f"kernel {report['machine']['kernel']}, Python {report['machine']['python']}, "
        f"node {report['machine']['node']}, {report['machine']['wrk']}.",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS/worker MiB "
        "| log B/req | JWKS fetches | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    medians = report["results"]["medians"]
    for scenario in SCENARIOS:
        for target in report["config"]["targets"]:
            e = medians.get(target, {}).get(scenario.name)
            if not e:
                continue
            ok = "yes" if e["statuses_ok"] else "**NO**"
            if e["tokens_wrapped"]:
                ok += " (tokens wrapped)"
            lines.append(
                f"| {scenario.label} | {target} | {fmt(e['rps'], 0)} | {fmt(e['p50_ms'], 2)} "
                f"| {fmt(e['p99_ms'], 2)} | {fmt(e['cpu_us_per_req'], 0)} "
                f"| {fmt(e['peak_rss_mib_per_worker'])} | {fmt(e['log_bytes_per_req'], 0)} "
                f"| {e['jwks_fetches']} | {ok} |"
            )
    lines += [
        "",
        "| ratio (same run) | req/s: median | req/s: per run | by CPU µs/req: median | goal |",
        "|---|---:|---|---:|---|",
    ]
    for r in report["results"]["ratios"]:
        per_run = ", ".join(f"{v:.2f}" for v in r["per_run"])
        lines.append(
            f"| {r['ratio']} | {r['median']:.2f} | {per_run} | {fmt(r['median_by_cpu'], 2)} | {r['goal']} |"
        )
    load = report["load"]
    lines += [
        "",
        f"Machine's other load during measurements (CPU not used by the targets, wrk, the bench "
        f"issuer or the runner): median {fmt(load['other_cpu_cores_median'], 3)} cores, max "
        f"{fmt(load['other_cpu_cores_max'], 3)}; steal median {fmt(load['steal_pct_median'], 2)} %; "
        f"1-min loadavg {fmt(load['loadavg_min'], 2)}–{fmt(load['loadavg_max'], 2)}.",
    ]
    if report["prechecks"]:
        bad = [
            f"{t}/{s}: got {got}, expected {SCENARIO_BY_NAME[s].expect}"
            for t, by_scenario in report["prechecks"].items()
            for s, got in by_scenario.items()
            if got != SCENARIO_BY_NAME[s].expect
        ]
        if bad:
            lines += ["", "Unexpected statuses in the pre-check: " + "; ".join(bad) + "."]
    for failure in report["failures"]:
        lines += [
            "",
            f"FAILED: run {failure['run'] + 1} {failure['target']}/{failure['scenario']}"
            f"{'' if failure['target_alive'] else ' (target died)'}: {failure['error'][-200:]}",
        ]
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Side-by-side HTTP benchmark of ours, the Flask quickstart and node.",
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs; medians (3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--workers", type=int, default=2, help="workers per target (2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads (4)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target and run (2)")
    parser.add_argument("--tokens", type=int, default=60000, help="distinct tokens per list (60000)")
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma list from {','.join(ALL_TARGETS)} ({','.join(DEFAULT_TARGETS)})",
    )
    parser.add_argument(
        "--scenarios", default=",".join(s.name for s in SCENARIOS), help="comma list (all seven)"
    )
    parser.add_argument("--issuer-port", type=int, default=3019, help="bench issuer port (3019)")
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for ours (repeatable), e.g. AUTH0_TOKEN_CACHE_SIZE=0",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run ours from another checkout as target 'baseline' (e.g. a git worktree of main)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder (bench/results)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the targets' log files")
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke: 1 run, 1 s per scenario, 1 s warm-up, 10k tokens"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 1, 1
        args.tokens = min(args.tokens, 10000)
    args.explicit_targets = "--targets" in " ".join(argv or sys.argv)
    args.targets = [t for t in args.targets.split(",") if t]
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if "baseline" not in args.targets:
            args.targets.append("baseline")
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    names = [s for s in args.scenarios.split(",") if s]
    unknown = set(names) - set(SCENARIO_BY_NAME)
    if unknown or not names:
        parser.error(f"scenarios: choose from {', '.join(SCENARIO_BY_NAME)}")
    args.scenarios = [SCENARIO_BY_NAME[s] for s in names]
    return args


@dataclass
class Collected:
    """Everything the runs gathered, in the order they gathered it."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    prechecks: dict[str, dict[str, int]] = field(default_factory=dict)
    log_sizes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Bench:
    """What every run shares: the options, the tokens, the issuer and where results go."""

    args: argparse.Namespace
    material: Material
    issuer: str
    issuer_pid: int
    outdir: Path
    logdir: Path


def preflight(args: argparse.Namespace, notes: list[str]) -> str | None:
    """Check the tools and targets can run; return why not, or None (skipped targets go in notes)."""
    if shutil.which("wrk") is None:
        return "wrk not found: run bench/run (it installs wrk) or apt-get install wrk"
    if "ours" in args.targets and not (ROOT / "service" / "wsgi.py").exists():
        if args.explicit_targets:
            return "target ours: service/wsgi.py does not exist"
        args.targets.remove("ours")
        notes.append("target ours skipped: service/wsgi.py does not exist yet.")
    if "node" in args.targets and not (BENCH / "node" / "node_modules").is_dir():
        return "node target: run `npm ci` in bench/node (bench/run does it)"
    return None


def warm_up(bench: Bench, target: Target, run: int, collected: Collected) -> None:
    """Wait for a target, check every scenario's status once, then load its JWKS and settle."""
    wait_ready(target, bench.args.workers)
    statuses = precheck(target, bench.material)
    if run == 0:
        collected.prechecks[target.name] = statuses
    # Warm-up: load the JWKS in every worker and let the interpreters settle.
    for name in ("public", "private_hot"):
        if not target.serves(SCENARIO_BY_NAME[name]):
            continue
        run_wrk(bench.args, target, SCENARIO_BY_NAME[name], bench.material, bench.args.warmup)


def record_failure(
    bench: Bench, run: int, target: Target, scenario: Scenario, err: Exception, collected: Collected
) -> bool:
    """Record a failed measurement and keep the target's log; return whether the target lives."""
    alive = target.proc is not None and target.proc.poll() is None
    collected.failures.append(
        {
            "run": run,
            "target": target.name,
            "scenario": scenario.name,
            "error": str(err).strip()[-500:],
            "target_alive": alive,
        }
    )
    keep_log_tail(target, bench.outdir, f"run{run + 1}-{scenario.name}-failed")
    print(
        f"[bench] run {run + 1}/{bench.args.runs} {scenario.name:15} {target.name:10} "
        f"FAILED: {str(err).strip()[-200:]}",
        flush=True,
    )
    return alive


def record_sample(
    bench: Bench, run: int, target: Target, scenario: Scenario, sample: dict[str, Any], collected: Collected
) -> None:
    """Keep one measurement (and the log when a status was unexpected) and print its line."""
    sample["run"] = run
    collected.samples.append(sample)
    if not sample["statuses_ok"]:
        keep_log_tail(target, bench.outdir, f"run{run + 1}-{scenario.name}-unexpected")
    print(
        f"[bench] run {run + 1}/{bench.args.runs} {scenario.name:15} {target.name:10} "
        f"{sample['rps']:>9,.0f} req/s  p99 {sample['p99_ms']:7.2f} ms  "
        f"{sample['cpu_us_per_req'] or 0:7.0f} µs/req  "
        f"other {sample['other_cpu_cores']:.2f} cores"
        f"{'' if sample['statuses_ok'] else '  UNEXPECTED STATUS'}",
        flush=True,
    )


def measure_scenarios(bench: Bench, run: int, targets: list[Target], collected: Collected) -> None:
    """Measure every scenario on every target, rotating which target goes first."""
    dead: set[str] = set()
    for index, scenario in enumerate(bench.args.scenarios):
        shift = (run + index) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            if target.name in dead or not target.serves(scenario):
                continue
            try:
                sample = measure(
                    bench.args, target, targets, scenario, bench.material, bench.issuer, [bench.issuer_pid]
                )
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                # One failing target must not cost the whole run: record it, keep its log.
                if not record_failure(bench, run, target, scenario, err, collected):
                    dead.add(target.name)
                continue
            record_sample(bench, run, target, scenario, sample, collected)


def retire(bench: Bench, run: int, target: Target, collected: Collected) -> None:
    """Stop a target after a run and keep (or drop) its log and metrics directory."""
    stop(target)
    collected.log_sizes.setdefault(target.name, []).append(target.log_path.stat().st_size)
    if bench.args.keep_logs:
        kept = bench.outdir / "logs" / f"{target.name}-run{run + 1}.log"
        kept.parent.mkdir(exist_ok=True)
        shutil.move(target.log_path, kept)
    else:
        target.log_path.unlink()
    if target.name in ("ours", "ours_gthread", "baseline"):
        shutil.rmtree(target.env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def run_all(bench: Bench, collected: Collected) -> None:
    """Start the targets fresh for every run, measure, and always stop them."""
    targets: list[Target] = []
    try:
        for run in range(bench.args.runs):
            targets = build_targets(bench.args, bench.issuer, bench.logdir)
            collected.fingerprints.append(code_fingerprint())
            for target in targets:
                start(target)
            for target in targets:
                warm_up(bench, target, run, collected)
            measure_scenarios(bench, run, targets, collected)
            for target in targets:
                retire(bench, run, target, collected)
    finally:
        for target in targets:
            stop(target)


def build_report(
    bench: Bench, argv: list[str] | None, started: str, collected: Collected
) -> dict[str, Any]:
    """Assemble the JSON report: configuration, machine, load, results and every sample."""
    args, material, samples = bench.args, bench.material, collected.samples
    notes = list(collected.notes)
    if any(s["tokens_wrapped"] for s in samples):
        notes.append(
            f"some runs sent more requests than the {material.count} distinct tokens of a "
            "list (tokens reused): raise --tokens for truly cold numbers."
        )
    if "ours" in args.targets and len(set(collected.fingerprints)) > 1:
        notes.append(
            "ours' code (service/, gunicorn.conf.py) changed between runs: "
            + ", ".join(collected.fingerprints)
            + "; the runs measured different versions."
        )
    others = [s["other_cpu_cores"] for s in samples]
    return {
        "started": started,
        "command": "bench/run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {
            "duration": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "workers": args.workers,
            "threads": args.threads,
            "warmup": args.warmup,
            "tokens": material.count,
            "targets": [t for t in args.targets],
            "scenarios": [s.name for s in args.scenarios],
            "ours_env": args.ours_env,
            "http_parser": "gunicorn_h1c" if http_parser() == "fast" else "python",
        },
        "machine": machine_info(),
        "ours_code_per_run": collected.fingerprints,
        "load": {
            "other_cpu_cores_median": median(others),
            "other_cpu_cores_max": max(others) if others else None,
            "steal_pct_median": median([s["steal_pct"] for s in samples]),
            "loadavg_min": min((s["loadavg_before"] for s in samples), default=None),
            "loadavg_max": max((s["loadavg_after"] for s in samples), default=None),
        },
        "prechecks": collected.prechecks,
        "log_bytes_total": collected.log_sizes,
        "notes": notes,
        "results": aggregate(samples, args.runs),
        "failures": collected.failures,
        "samples": samples,
    }


def write_report(report: dict[str, Any], outdir: Path, out: Path) -> None:
    """Write results.{json,md}, copy them to latest.*, and print the markdown."""
    text = markdown(report)
    (outdir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (outdir / "results.md").write_text(text)
    shutil.copyfile(outdir / "results.json", out / "latest.json")
    shutil.copyfile(outdir / "results.md", out / "latest.md")
    print()
    print(text)
    print(f"[bench] wrote {outdir}/results.md and results.json (also {out}/latest.*)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write bench/results/<stamp>/results.{json,md}."""
    args = parse_args(argv)
    collected = Collected()
    problem = preflight(args, collected.notes)
    if problem:
        print(problem, file=sys.stderr)
        return 2

    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    outdir = args.out / started
    outdir.mkdir(parents=True, exist_ok=True)
    issuer = f"http://127.0.0.1:{args.issuer_port}/"
    t0 = time.monotonic()
    material = prepare(args.out / "cache", issuer, args.tokens)
    print(
        f"[bench] material ready ({material.count} tokens per list) in {time.monotonic() - t0:.1f}s",
        flush=True,
    )

    issuer_proc = start_issuer(args.issuer_port, issuer, material)
    logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    bench = Bench(args, material, issuer, issuer_proc.pid, outdir, logdir)
    try:
        run_all(bench, collected)
    finally:
        issuer_proc.terminate()
        issuer_proc.wait(timeout=10)
        shutil.rmtree(logdir, ignore_errors=True)

    write_report(build_report(bench, argv, started, collected), outdir, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
