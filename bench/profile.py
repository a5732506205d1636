"""Profile a Python target's workers under one bench scenario with py-spy, and print the top frames.

Usage (repo root, py-spy from requirements-dev.txt, root or ptrace permission):
    .venv/bin/python -m bench.profile [--target ours] [--scenario private_hot] [--duration 10]
Writes the collapsed stacks per worker under bench/results/profile-<stamp>/ (feed them to any
flamegraph tool) and prints the top functions by own ("self") and inclusive sample share.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from datetime import UTC
from datetime import datetime
from pathlib import Path

from bench.material import prepare
from bench.runner import ALL_TARGETS
from bench.runner import BENCH
from bench.runner import SCENARIO_BY_NAME
from bench.runner import VENV_BIN
from bench.runner import build_targets
from bench.runner import parse_args
from bench.runner import run_wrk
from bench.runner import start
from bench.runner import start_issuer
from bench.runner import stop
from bench.runner import wait_ready


def summarize(collapsed: list[Path], top: int) -> str:
    """Return tables of the top frames by self and inclusive share of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in collapsed:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return "no samples (is py-spy allowed to attach? try as root)\n"
    out = [f"{total} samples\n", "| self % | frame |", "|---:|---|"]
    out += [f"| {100 * n / total:.1f} | `{frame}` |" for frame, n in own.most_common(top)]
    out += ["", "| inclusive % | frame |", "|---:|---|"]
    out += [f"| {100 * n / total:.1f} | `{frame}` |" for frame, n in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Start the target, drive one scenario with wrk while py-spy samples every worker."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--target", default="ours", choices=[t for t in ALL_TARGETS if t != "node"])
    parser.add_argument("--scenario", default="private_hot", choices=sorted(SCENARIO_BY_NAME))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--wall",
        action="store_true",
        help="sample every thread (wall time, includes I/O and GIL waits); default: GIL holders only",
    )
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--issuer-port", type=int, default=3019)
    own_args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy missing: .venv/bin/pip install -r requirements-dev.txt", file=sys.stderr)
        return 2

    args = parse_args(["--targets", own_args.target, "--issuer-port", str(own_args.issuer_port)])
    args.ours_env = own_args.ours_env
    issuer = f"http://127.0.0.1:{args.issuer_port}/"
    material = prepare(args.out / "cache", issuer, args.tokens)
    outdir = BENCH / "results" / f"profile-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    outdir.mkdir(parents=True)
    logdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    issuer_proc = start_issuer(args.issuer_port, issuer, material)
    (target,) = build_targets(args, issuer, logdir)
    try:
        start(target)
        wait_ready(target, args.workers)
        for name in ("public", "private_hot", own_args.scenario):
            run_wrk(args, target, SCENARIO_BY_NAME[name], material, 2)
        spies, files = [], []
        for pid in target.workers:
            path = outdir / f"{target.name}-{own_args.scenario}-{pid}.txt"
            files.append(path)
            command = [py_spy, "record", "--pid", str(pid), "--duration", str(own_args.duration)]
            command += ["--rate", str(own_args.rate), "--format", "raw", "--nonblocking", "--function"]
            command += ["--output", str(path)] + ([] if own_args.wall else ["--gil"])
            spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        result: dict[str, object] = {}
        driver = threading.Thread(
            target=lambda: result.update(
                wrk=run_wrk(args, target, SCENARIO_BY_NAME[own_args.scenario], material, own_args.duration)
            )
        )
        driver.start()
        errors = [spy.communicate(timeout=own_args.duration + 60)[1] for spy in spies]
        driver.join()
    finally:
        stop(target)
        issuer_proc.terminate()
        issuer_proc.wait(timeout=10)
        shutil.rmtree(logdir, ignore_errors=True)
    present = [f for f in files if f.exists()]
    if not present:
        print("py-spy wrote nothing:\n" + "\n".join(e.decode(errors="replace") for e in errors))
        return 1
    summary, _ = result["wrk"]  # type: ignore[misc]
    header = (
        f"# Profile ({'wall' if own_args.wall else 'GIL holders'}): {target.name} / "
        f"{own_args.scenario}, {own_args.duration} s, "
        f"{summary['requests'] / (summary['duration_us'] / 1e6):,.0f} req/s under py-spy\n\n"
    )
    text = header + summarize(present, own_args.top)
    (outdir / "summary.md").write_text(text)
    print(text)
    print(f"[bench] collapsed stacks and summary in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
