"""Python callers against the in-process ideal, side by side in one run.

Measures, on the same machine and in one run:

* 8 Python threads each waiting on one crypto_job job (~1 ms) at a time
  through 2 workers, as a share of the plugin's in-process ideal (2 threads
  running the handler with no transport);
* ``concurrent.futures.ProcessPoolExecutor(2)`` running an equivalent Python
  job (an HMAC-SHA256 chain of ~1 ms), one submit per job from 8 threads, as
  a share of its own ideal (2 processes running the chain in a loop);
* the Python side's CPU per call against the Rust client's (``powerhose-bench``
  with 8 callers, same job, same run);
* asyncio with 1,000 ``aexecute`` calls in flight against the Rust pipelined
  client with 1,000 in flight.

Run from the repository after ``pip install ./python`` and
``cargo build --release``::

    python3 python/bench.py [--duration 5] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as `python3 python/bench.py`, this directory comes first on sys.path and
# its `powerhose/` (sources without the built module) would hide the
# installed package: measure what `pip install ./python` installed.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import powerhose  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HEADERS = {"op": "sign", "rounds": "56"}  # ~1 ms per job on this machine's CPUs
PAYLOAD = b"x" * 100
CALLERS = 8
IN_FLIGHT = 1000
WORKERS = 2
KEY = b"powerhose-bench"


def release(name: str) -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / name


def rust_bench(extra: list[str], duration: float) -> dict:
    """One ``powerhose-bench --json`` run of the same job."""
    cmd = [str(release("powerhose-bench")), "--plugin", str(release("libcrypto_job.so")), "--workers", str(WORKERS)]
    cmd += ["--duration", str(duration), "--json"]
    for name, value in HEADERS.items():
        cmd += ["--header", f"{name}:{value}"]
    out = subprocess.run(cmd + extra, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout)


class Pool:
    """The ``powerhose`` command in a child process, in a private runtime
    directory: the Python process then holds the client alone, so its CPU
    time is the Python side's cost per call."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="phbench")
        os.chmod(self.dir.name, 0o700)
        env = dict(os.environ, POWERHOSE_RUNTIME_DIR=self.dir.name)
        cmd = [str(release("powerhose")), "--plugin", str(release("libcrypto_job.so")), "--workers", str(WORKERS)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        # Its readiness line, on stdout, once every worker has registered.
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if "powerhose ready" not in line:
            raise RuntimeError(f"the pool did not start: {line!r} (exit {self.proc.wait()})")
        # Keep reading its output so it never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
        self.frontend = f"unix://{self.dir.name}/front.sock"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.dir.cleanup()


def timed(duration: float, body) -> tuple[int, float, float]:
    """Runs ``body(stop_at) -> jobs`` and returns (jobs, wall s, CPU s of this process)."""
    cpu, wall = time.process_time(), time.monotonic()
    jobs = body(wall + duration)
    return jobs, time.monotonic() - wall, time.process_time() - cpu


def threads(n: int, stop_at: float, call) -> int:
    counts = [0] * n

    def run(i: int) -> None:
        while time.monotonic() < stop_at:
            call()
            counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts)


def python_threads(client: powerhose.Client, duration: float) -> tuple[int, float, float]:
    return timed(duration, lambda stop: threads(CALLERS, stop, lambda: client.execute(PAYLOAD, HEADERS)))


def python_asyncio(client: powerhose.Client, duration: float) -> tuple[int, float, float]:
    async def main(stop_at: float) -> int:
        done = 0

        async def one() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await client.aexecute(PAYLOAD, HEADERS, timeout=30.0)
                done += 1

        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
        return done

    return timed(duration, lambda stop: asyncio.run(main(stop)))


def hmac_chain(data: bytes, rounds: int) -> bytes:
    """The Python job: an HMAC-SHA256 chain, like crypto_job's hmac rounds."""
    for _ in range(rounds):
        data = hmac.new(KEY, data, hashlib.sha256).digest()
    return data


def hmac_rounds_for(ms: float) -> int:
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 0.2:
        hmac_chain(PAYLOAD, 100)
        n += 100
    return max(1, int(n * ms / 1000 / (time.perf_counter() - start)))


def loop_for(seconds: float, rounds: int) -> int:
    stop, n = time.monotonic() + seconds, 0
    while time.monotonic() < stop:
        hmac_chain(PAYLOAD, rounds)
        n += 1
    return n


def process_pool(duration: float) -> dict:
    rounds = hmac_rounds_for(1.0)
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        pool.submit(loop_for, 0.1, rounds).result()  # both processes started
        pool.submit(loop_for, 0.1, rounds).result()
        start = time.monotonic()
        ideal = sum(f.result() for f in [pool.submit(loop_for, duration, rounds) for _ in range(WORKERS)])
        ideal_rate = ideal / (time.monotonic() - start)
        jobs, wall, _ = timed(
            duration, lambda stop: threads(CALLERS, stop, lambda: pool.submit(hmac_chain, PAYLOAD, rounds).result())
        )
    return {"rounds": rounds, "ideal_jobs_per_s": ideal_rate, "jobs_per_s": jobs / wall}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def one_round(d: float) -> dict:
    """One round: each Python figure measured right after the Rust run it is
    compared with, so a noisy spell of the machine hits both sides alike."""
    rust_callers = rust_bench(["--callers", str(CALLERS)], d)
    ideal = rust_callers["in_process_n_threads"]["jobs_per_s"]
    pool = Pool()
    try:
        client = powerhose.Client(pool.frontend)
        client.execute(PAYLOAD, HEADERS, timeout=30.0)  # connected, workers warm
        t_jobs, t_wall, t_cpu = python_threads(client, d)
        rust_pipe = rust_bench(["--pipeline", str(IN_FLIGHT)], d)
        a_jobs, a_wall, _ = python_asyncio(client, d)
    finally:
        pool.close()
    return {
        "in_process_ideal_jobs_per_s": ideal,
        "python_threads_jobs_per_s": t_jobs / t_wall,
        "python_threads_share": t_jobs / t_wall / ideal,
        "rust_callers_jobs_per_s": rust_callers["cluster"]["jobs_per_s"],
        "rust_callers_share": rust_callers["verdict_ratio"],
        "python_cpu_per_call_us": t_cpu / t_jobs * 1e6,
        "rust_client_cpu_per_call_us": rust_callers["cpu_per_job"]["client_us"],
        "asyncio_jobs_per_s": a_jobs / a_wall,
        "rust_pipelined_jobs_per_s": rust_pipe["cluster"]["jobs_per_s"],
        "asyncio_share_of_rust_pipelined": a_jobs / a_wall / rust_pipe["cluster"]["jobs_per_s"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each figure is their median")
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of a table")
    args = parser.parse_args()
    d = args.duration

    rounds = [one_round(d) for _ in range(max(1, args.rounds))]
    results: dict = {key: median([r[key] for r in rounds]) for key in rounds[0]}
    results["rounds"] = rounds
    procs = process_pool(d)
    results["process_pool"] = procs
    results["process_pool_share"] = procs["jobs_per_s"] / procs["ideal_jobs_per_s"]
    py_cpu, rust_cpu = results["python_cpu_per_call_us"], results["rust_client_cpu_per_call_us"]
    ideal = results["in_process_ideal_jobs_per_s"]
    targets = [
        ("8 Python threads >= 90% of the in-process ideal", results["python_threads_share"] >= 0.90),
        ("Python CPU per call within 20 us of the Rust client's", py_cpu - rust_cpu <= 20.0),
        ("asyncio, 1,000 in flight >= 80% of the Rust pipelined client", results["asyncio_share_of_rust_pipelined"] >= 0.80),
    ]
    results["targets"] = {name: ok for name, ok in targets}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        p = results
        print(f"crypto_job ~1 ms, {WORKERS} workers, {CALLERS} callers, {d:g} s per measurement, medians of {len(rounds)} rounds")
        print(f"in-process ideal ({WORKERS} threads)         {ideal:8.0f} jobs/s")
        shares = " / ".join(f"{r['python_threads_share']:.1%}" for r in rounds)
        print(f"Python threads, powerhose             {p['python_threads_jobs_per_s']:8.0f} jobs/s  {p['python_threads_share']:6.1%}  (rounds {shares})")
        print(f"Rust callers, powerhose (same run)    {p['rust_callers_jobs_per_s']:8.0f} jobs/s  {p['rust_callers_share']:6.1%}")
        print(f"ProcessPoolExecutor({WORKERS}), HMAC chain   {procs['jobs_per_s']:8.0f} jobs/s  {p['process_pool_share']:6.1%} of its ideal ({procs['ideal_jobs_per_s']:.0f}/s)")
        print(f"CPU per call: Python {py_cpu:.1f} us, Rust client {rust_cpu:.1f} us (+{py_cpu - rust_cpu:.1f})")
        print(f"asyncio, {IN_FLIGHT} in flight               {p['asyncio_jobs_per_s']:8.0f} jobs/s  {p['asyncio_share_of_rust_pipelined']:6.1%} of Rust pipelined ({p['rust_pipelined_jobs_per_s']:.0f}/s)")
        for name, ok in targets:
            print(f"{'PASS' if ok else 'MISS'}  {name}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
