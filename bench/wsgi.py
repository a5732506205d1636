"""In-process WSGI benchmark: microseconds per request through each app's WSGI callable, no server.

Usage (repo root): .venv/bin/python -m bench.wsgi [--requests 2000] [--repeats 5] [--quick]
                   [--instructions]

Gateway mode is measured too: ``/auth/check`` (a policy with one rule, the original request in
``X-Original-URL``/``X-Original-Method``) against ours ``/api/private``, both with a cached token,
taking turns within each repeat.

It builds ours (``service.app.create_app``, production settings, multiprocess metrics, JSON logs to
/dev/null) and both quickstart re-implementations (``bench/quickstart``: ``quickstart`` is the
samples repository's, with ``cross_origin``; ``quickstart_docs`` is the docs page's, without it)
against one local issuer,
then drives each scenario through ``app(environ, start_response)`` with a prepared environ. Targets
take turns within every repeat, and the order rotates between repeats, so drift of a shared machine
hits both alike; the figure kept is the minimum over repeats (the run least disturbed by others).
``--instructions`` adds valgrind cachegrind instruction counts per request, which are immune to
noise (each count is the difference of two runs, so start-up cost cancels out).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]

#: (scenario, path, which tokens, expected status): each request a fresh copy of one environ.
SCENARIOS: tuple[tuple[str, str, str | None, int], ...] = (
    ("public", "/api/public", None, 200),
    ("private_hot", "/api/private", "hot", 200),
    ("private_cold", "/api/private", "cold", 200),
    ("bad_signature", "/api/private", "badsig", 401),
)
TARGETS = ("ours", "quickstart_docs", "quickstart")
#: Ratios of two (target, scenario) cells of the same run, and the goal each must stay under.
#: The quickstarts cache nothing: their private route costs the same for any token.
GOALS: tuple[tuple[str, tuple[str, str], tuple[str, str], float | None], ...] = (
    ("ours public / docs quickstart public", ("ours", "public"), ("quickstart_docs", "public"), 1.0),
    ("ours private cold / docs quickstart private", ("ours", "private_cold"),
     ("quickstart_docs", "private_hot"), 0.8),
    ("ours private hot / docs quickstart private", ("ours", "private_hot"),
     ("quickstart_docs", "private_hot"), None),
    ("ours public / samples quickstart public", ("ours", "public"), ("quickstart", "public"), 1.0),
    ("ours private cold / samples quickstart private", ("ours", "private_cold"),
     ("quickstart", "private_hot"), 0.8),
    ("ours private hot / ours public", ("ours", "private_hot"), ("ours", "public"), None),
)


@dataclass(frozen=True, slots=True)
class Cell:
    """One (target, scenario) measurement: every repeat's µs per request."""

    target: str
    scenario: str
    runs: tuple[float, ...]

    @property
    def best(self) -> float:
        """The least disturbed repeat."""
        return min(self.runs)


def _environ(path: str, token: str | None) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it for ``GET path`` (with a bearer token if given)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "RAW_URI": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "3010",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:3010",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


def _call(app: WSGIApp, environ: dict[str, Any]) -> int:
    """One request through the WSGI callable; returns the status code."""
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(line)
        return None

    environ = dict(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    body = app(environ, start_response)
    try:
        for _chunk in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return int(status[0].split(None, 1)[0])


class Tokens:
    """Token streams per kind: ``hot`` repeats one token, the others never repeat within a run."""

    def __init__(self, material: Any) -> None:
        self._hot = material.hot_token()
        self._lists = {name: material.tokens(name).read_text().split() for name in ("cold", "badsig")}
        self._next = dict.fromkeys(self._lists, 0)

    def take(self, kind: str | None, count: int, target: str) -> Iterator[str | None]:
        """``count`` tokens of a kind; each target gets its own slice of the distinct lists."""
        if kind is None:
            return iter([None] * count)
        if kind == "hot":
            return iter([self._hot] * count)
        tokens = self._lists[kind]
        start = self._next[kind]
        self._next[kind] = start + count
        if start + count > len(tokens):
            raise SystemExit(f"bench.wsgi: not enough {kind} tokens; lower --requests or --repeats")
        return iter(tokens[start : start + count])


def _quiet_stdout() -> Any:
    """Send stdout (where ours writes its JSON log lines) to /dev/null; return the real one."""
    real = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return real


def build_targets(issuer: str, audience: str, jwks_uri: str) -> dict[str, WSGIApp]:
    """Ours as shipped (production settings) and the quickstart, both trusting ``issuer``."""
    # prometheus_client picks its multiprocess value store at import: set the directory first,
    # exactly as gunicorn.conf.py does for the real service.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-wsgi-metrics-"))
    from service.app import create_app
    from service.config import Settings

    ours = create_app(
        Settings.from_env(
            {"AUTH0_ISSUER": issuer, "AUTH0_AUDIENCE": audience, "AUTH0_JWKS_URI": jwks_uri}
        )
    )
    os.environ.update({"AUTH0_ISSUER": issuer, "API_IDENTIFIER": audience})
    sys.path.insert(0, str(ROOT / "bench" / "quickstart"))
    import server as quickstart  # type: ignore[import-not-found]  # bench/quickstart/server.py
    import server_docs  # type: ignore[import-not-found]  # bench/quickstart/server_docs.py

    # Start-up garbage goes to the permanent generation: collections during the measurement then
    # scan only what requests allocate, not every import (the same for both targets).
    gc.collect()
    gc.freeze()
    return {"ours": ours, "quickstart_docs": server_docs.APP, "quickstart": quickstart.APP}


def measure(
    apps: dict[str, WSGIApp], tokens: Tokens, requests: int, repeats: int
) -> dict[tuple[str, str], Cell]:
    """Interleave targets within each repeat (order rotating) and return every cell's runs."""
    runs: dict[tuple[str, str], list[float]] = {}
    for repeat in range(repeats):
        for index, (scenario, path, kind, expected) in enumerate(SCENARIOS):
            shift = (repeat + index) % len(TARGETS)
            order = TARGETS[shift:] + TARGETS[:shift]
            for target in order:
                app = apps[target]
                environs = [_environ(path, t) for t in tokens.take(kind, requests, target)]
                # One untimed request checks the status and warms this route's code path.
                status = _call(app, environs[0])
                if status != expected:
                    raise SystemExit(f"bench.wsgi: {target} {scenario} answered {status}, not {expected}")
                started = time.perf_counter_ns()
                for environ in environs:
                    _call(app, environ)
                elapsed = time.perf_counter_ns() - started
                runs.setdefault((target, scenario), []).append(elapsed / requests / 1000)
    return {key: Cell(key[0], key[1], tuple(values)) for key, values in runs.items()}


#: Gateway mode: /auth/check with a cached token, at most this × ours /api/private with one.
GATEWAY_GOAL = 1.1
_GATEWAY_POLICY = "rules:\n  - name: private\n    path: /api/private\n    methods: [GET]\n"


def build_gateway(issuer: str, audience: str, jwks_uri: str) -> WSGIApp:
    """Ours in gateway mode (GATEWAY_POLICY: one rule for /api/private), trusting ``issuer``."""
    from service.app import create_app
    from service.config import Settings

    policy = Path(tempfile.mkdtemp(prefix="bench-wsgi-gateway-")) / "policy.yaml"
    policy.write_text(_GATEWAY_POLICY)
    return create_app(Settings.from_env({
        "AUTH0_ISSUER": issuer, "AUTH0_AUDIENCE": audience, "AUTH0_JWKS_URI": jwks_uri,
        "GATEWAY_POLICY": str(policy),
    }))


def _gateway_environ(token: str) -> dict[str, Any]:
    """What nginx's auth_request subrequest sends for ``GET /api/private`` with a bearer token."""
    environ = _environ("/auth/check", token)
    environ["HTTP_X_ORIGINAL_URL"] = "http://127.0.0.1:8080/api/private"
    environ["HTTP_X_ORIGINAL_METHOD"] = "GET"
    return environ


def measure_gateway(
    ours: WSGIApp, gateway: WSGIApp, token: str, requests: int, repeats: int
) -> dict[str, Any]:
    """/auth/check and /api/private with one cached token, taking turns: min µs of each."""
    cases = {
        "private_hot": (ours, _environ("/api/private", token)),
        "gateway_hot": (gateway, _gateway_environ(token)),
    }
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for repeat in range(repeats):
        order = list(cases) if repeat % 2 == 0 else list(reversed(cases))
        for name in order:
            app, environ = cases[name]
            if _call(app, environ) != 200:
                raise SystemExit(f"bench.wsgi: {name} did not answer 200")
            started = time.perf_counter_ns()
            for _ in range(requests):
                _call(app, environ)
            runs[name].append((time.perf_counter_ns() - started) / requests / 1000)
    best = {name: min(values) for name, values in runs.items()}
    return {"private_hot_us": best["private_hot"], "gateway_hot_us": best["gateway_hot"],
            "ratio": best["gateway_hot"] / best["private_hot"], "goal_at_most": GATEWAY_GOAL}


def _dpop_environs(issuer: Any, count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``count`` DPoP requests to /api/private: each a new bound token and a fresh ES256 proof."""
    from joserfc import jwt
    from joserfc.jwk import ECKey
    from joserfc.jwk import RSAKey

    from bench.material import _claims
    from dev_issuer.client import make_proof

    signer = RSAKey.import_key(issuer.material.key_path.read_bytes())
    kid = json.loads(issuer.material.jwks_path.read_text())["keys"][0]["kid"]
    client = ECKey.generate_key("P-256", private=True)
    url = "http://127.0.0.1:3010/api/private"  # what _environ's Host, scheme and path make
    now = int(time.time())
    environs, proofs = [], []
    for index in range(count):
        claims = _claims(issuer.url, issuer.audience, f"auth0|dpop-{index}", now)
        claims["cnf"] = {"jkt": client.thumbprint()}
        token = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": kid}, claims, signer)
        proof = make_proof(client, "GET", url, access_token=token)
        environ = _environ("/api/private", None)
        environ["HTTP_AUTHORIZATION"] = f"DPoP {token}"
        environ["HTTP_DPOP"] = proof
        environs.append(environ)
        proofs.append(proof)
    return environs, proofs


def measure_dpop(app: WSGIApp, issuer: Any, requests: int, repeats: int) -> dict[str, float]:
    """Ours on cold DPoP requests, and the ES256 verify of the same proofs: min of repeats."""
    from bench.micro import build_es256_floor

    dpop_runs, es256_runs = [], []
    for _ in range(repeats):
        environs, proofs = _dpop_environs(issuer, requests + 1)
        status = _call(app, environs[0])
        if status != 200:
            raise SystemExit(f"bench.wsgi: ours dpop answered {status}, not 200")
        started = time.perf_counter_ns()
        for environ in environs[1:]:
            _call(app, environ)
        dpop_runs.append((time.perf_counter_ns() - started) / requests / 1000)
        floor = build_es256_floor(proofs)
        started = time.perf_counter_ns()
        for proof in proofs[1:]:
            floor(proof)
        es256_runs.append((time.perf_counter_ns() - started) / requests / 1000)
    return {"dpop_us": min(dpop_runs), "es256_us": min(es256_runs)}


def instructions(target: str, scenario: str, issuer_port: int, requests: int, tokens: int) -> float | None:
    """Instructions per request under cachegrind: the difference of a run of N and of 2N."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    counts = []
    for n in (requests, requests * 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            subprocess.run(
                [valgrind, "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
                 sys.executable, "-m", "bench.wsgi", "--child", target, scenario,
                 "--requests", str(n), "--issuer-port", str(issuer_port), "--tokens", str(tokens)],
                cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            counts.append(_total_instructions(out))
    return (counts[1] - counts[0]) / requests


def _total_instructions(path: Path) -> int:
    """The ``summary:`` line of a cachegrind output file (Ir is its first event)."""
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"bench.wsgi: no summary in {path}")


def _report(cells: dict[tuple[str, str], Cell], irs: dict[tuple[str, str], float | None],
            requests: int, repeats: int, dpop: dict[str, float] | None,
            gateway: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print the markdown tables and return the JSON-able results."""
    print(f"In-process WSGI benchmark: µs per request, min of {repeats} repeats × {requests} requests.\n")
    header = "| scenario | " + " | ".join(f"{t} µs" for t in TARGETS)
    if irs:
        header += " | " + " | ".join(f"{t} instr/req" for t in TARGETS)
    print(header + " |")
    print("|---|" + "---:|" * (len(TARGETS) * (2 if irs else 1)))
    for scenario, *_ in SCENARIOS:
        row = [f"{cells[(t, scenario)].best:.1f}" for t in TARGETS]
        if irs:
            row += [f"{irs[(t, scenario)]:,.0f}" if irs.get((t, scenario)) else "—" for t in TARGETS]
        print(f"| {scenario} | " + " | ".join(row) + " |")
    print("\n| ratio (same run) | by time | by instructions | target |")
    print("|---|---:|---:|---:|")
    ratios = []
    for name, a, b, goal in GOALS:
        by_time = cells[a].best / cells[b].best
        by_ir = irs[a] / irs[b] if irs.get(a) and irs.get(b) else None
        ratios.append({"ratio": name, "by_time": round(by_time, 3),
                       "by_instructions": round(by_ir, 3) if by_ir else None, "goal_at_most": goal})
        ir_text = f"{by_ir:.2f}" if by_ir else "—"
        print(f"| {name} | {by_time:.2f} | {ir_text} | {'' if goal is None else f'≤ {goal}'} |")
    if dpop:
        cold = cells[("ours", "private_cold")].best
        budget = cold + dpop["es256_us"] + 20
        print(
            f"\nDPoP (ours, each request a new bound token and a fresh proof): {dpop['dpop_us']:.1f} µs; "
            f"target ≤ private cold {cold:.1f} + ES256 verify {dpop['es256_us']:.1f} + 20 = {budget:.1f} µs "
            f"({'met' if dpop['dpop_us'] <= budget else 'not met'})."
        )
    if gateway:
        print(
            f"\nGateway mode (cached token, same run): /auth/check {gateway['gateway_hot_us']:.1f} µs, "
            f"ours /api/private {gateway['private_hot_us']:.1f} µs: {gateway['ratio']:.2f} × "
            f"(target ≤ {GATEWAY_GOAL}: {'met' if gateway['ratio'] <= GATEWAY_GOAL else 'not met'})."
        )
        if gateway.get("ratio_by_instructions"):
            print(
                f"By instructions: /auth/check {gateway['gateway_instructions']:,.0f} per request, "
                f"{gateway['ratio_by_instructions']:.2f} × ours /api/private."
            )
    return {
        "dpop": dpop,
        "gateway": gateway,
        "requests": requests,
        "repeats": repeats,
        "cells": [{"target": c.target, "scenario": c.scenario, "best_us": round(c.best, 2),
                   "runs_us": [round(r, 2) for r in c.runs]} for c in cells.values()],
        "instructions_per_request": {f"{t}/{s}": v for (t, s), v in irs.items()},
        "ratios": ratios,
    }


def _child(target: str, scenario: str, requests: int, issuer: Any, stop: Callable[[], None]) -> None:
    """Run one (target, scenario) ``requests`` times: the body measured under cachegrind."""
    apps = build_targets(issuer.url, issuer.audience, issuer.jwks_uri)
    if target == "gateway":  # gateway mode's /auth/check with the hot token (measure_gateway)
        apps["gateway"] = build_gateway(issuer.url, issuer.audience, issuer.jwks_uri)
        environs = [_gateway_environ(issuer.material.hot_token())] * (requests + 1)
    else:
        spec = next(s for s in SCENARIOS if s[0] == scenario)
        tokens = Tokens(issuer.material)
        environs = [_environ(spec[1], t) for t in tokens.take(spec[2], requests + 1, target)]
    for app in apps.values():  # both load their keys now, so nothing is fetched from here on
        _call(app, _environ("/api/private", issuer.material.hot_token()))
    _call(apps[target], environs[0])
    # Deterministic counts: no issuer thread polling and no collections triggered by the run's
    # length (the N and 2N runs must differ by the requests alone).
    stop()
    gc.disable()
    for environ in environs[1:]:
        _call(apps[target], environ)


@dataclass(frozen=True, slots=True)
class _Issuer:
    """The local issuer the targets trust."""

    url: str
    audience: str
    jwks_uri: str
    material: Any


def _start_issuer(port: int, count: int) -> tuple[_Issuer, Callable[[], None]]:
    """Serve discovery and the bench JWKS on loopback in a thread; return it and its stopper."""
    from bench.material import AUDIENCE
    from bench.material import prepare
    from dev_issuer.app import create_app
    from dev_issuer.config import IssuerSettings
    from dev_issuer.keys import SigningKey
    from dev_issuer.server import BackgroundServer

    url = f"http://127.0.0.1:{port}/"
    # A cache of its own: bench.micro and bench/run mint for another issuer URL.
    material = prepare(ROOT / "bench" / "results" / "cache-wsgi", url, count)
    # A long max-age: no key refresh (nor a failed one, once the issuer is stopped) mid-count.
    settings = IssuerSettings(port=port, issuer=url, audiences=(AUDIENCE,), jwks_max_age=3600)
    key = SigningKey.from_pem_file(str(material.key_path))
    server = BackgroundServer(create_app(settings, key), port=port).start()

    return _Issuer(url, AUDIENCE, f"{url}.well-known/jwks.json", material), server.stop


def _nothing() -> None:
    """A stopper for an issuer already stopped."""


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables (and JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m bench.wsgi", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per repeat and cell")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 200 requests × 2 repeats")
    parser.add_argument("--instructions", action="store_true", help="add cachegrind instruction counts")
    parser.add_argument("--ir-cells", default="", metavar="TARGET/SCENARIO,...",
                        help="count only these cells under cachegrind (default: all)")
    parser.add_argument("--ir-requests", type=int, default=300,
                        help="N of the N and 2N cachegrind runs (300)")
    parser.add_argument("--issuer-port", type=int, default=3018)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("TARGET", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.repeats = 200, 2
    # Enough distinct tokens for every cell and for the cachegrind children (N and 2N requests).
    per_run = args.requests * args.repeats * len(TARGETS)
    count = args.tokens or max(per_run + 10, 3 * min(args.requests, 500) + 10)
    issuer, stop = _start_issuer(args.issuer_port, count)
    real_stdout = _quiet_stdout()
    try:
        if args.child:
            _child(args.child[0], args.child[1], args.requests, issuer, stop)
            stop = _nothing
            return 0
        apps = build_targets(issuer.url, issuer.audience, issuer.jwks_uri)
        cells = measure(apps, Tokens(issuer.material), args.requests, args.repeats)
        dpop = measure_dpop(apps["ours"], issuer, min(args.requests, 1000), args.repeats)
        gateway = measure_gateway(
            apps["ours"], build_gateway(issuer.url, issuer.audience, issuer.jwks_uri),
            issuer.material.hot_token(), args.requests, args.repeats,
        )
        irs: dict[tuple[str, str], float | None] = {}
        if args.instructions:
            # Each child serves its own issuer on the same port: free it first.
            stop()
            stop = _nothing
            n = min(args.requests, args.ir_requests)
            chosen = {tuple(c.split("/", 1)) for c in args.ir_cells.split(",") if c}
            for scenario, *_ in SCENARIOS:
                for target in TARGETS:
                    if not chosen or (target, scenario) in chosen:
                        irs[(target, scenario)] = instructions(target, scenario, args.issuer_port, n, count)
            if not chosen or ("gateway", "gateway_hot") in chosen:
                gateway_ir = instructions("gateway", "gateway_hot", args.issuer_port, n, count)
                private_ir = irs.get(("ours", "private_hot"))
                if gateway_ir and private_ir:
                    gateway.update(
                        gateway_instructions=gateway_ir, ratio_by_instructions=gateway_ir / private_ir
                    )
        sys.stdout = real_stdout
        results = _report(cells, irs, args.requests, args.repeats, dpop, gateway)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        sys.stdout = real_stdout
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
