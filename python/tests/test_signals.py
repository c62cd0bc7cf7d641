"""Signals: Ctrl-C (KeyboardInterrupt) ends a wait on the main thread at
once, and the ``powerhose-worker`` script pip installs stops cleanly on
SIGINT and SIGTERM, as the Rust binary does."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

import powerhose
from conftest import WAIT, Processes, wait_until

CHILD = textwrap.dedent(
    """
    import sys, powerhose
    client = powerhose.Client(sys.argv[1])
    try:
        client.execute(b"", {"action": "sleep", "ms": 10000, "file": sys.argv[2]}, timeout=30)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(42)
    print("not interrupted", flush=True)
    """
)


@pytest.mark.parametrize("how", ["execute", "map"])
def test_ctrl_c_ends_a_wait_on_the_main_thread(
    cluster: Callable[..., powerhose.Cluster], runtime_dir: Path, how: str
) -> None:
    pool = cluster(workers=1)
    started = runtime_dir / "started"
    code = CHILD if how == "execute" else CHILD.replace(
        'client.execute(b"", {"action": "sleep", "ms": 10000, "file": sys.argv[2]}, timeout=30)',
        'list(client.map([(b"", {"action": "sleep", "ms": "10000", "file": sys.argv[2]})], timeout=30))',
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, pool.frontend, str(started)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until("the job to start", started.exists)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=WAIT)
        took = time.monotonic() - sent
    finally:
        child.kill()
        child.wait(WAIT)
    assert child.returncode == 42, (out, err)
    assert out.strip() == "KeyboardInterrupt"
    assert took < 1.0, took


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_worker_script_stops_cleanly(procs: Processes, sig: int) -> None:
    script = powerhose.find_worker()
    assert script is not None, "pip install ./python installs powerhose-worker"
    procs.broker()
    worker = procs.worker(program=script, name="pyworker")
    client = powerhose.Client()
    assert client.execute(b"hosted") == b"hosted"
    worker.signal(sig)
    assert worker.wait(WAIT) == 0, worker.stderr()
    assert "Traceback" not in worker.stderr() and "KeyboardInterrupt" not in worker.stderr()
    assert "worker stopped" in worker.stderr()
    assert client.workers() == 0


def test_the_worker_script_exit_codes(plugin: Callable[[str], str], runtime_dir: Path) -> None:
    script = powerhose.find_worker()
    assert script is not None
    run = lambda *args: subprocess.run([script, *args], capture_output=True, text=True, timeout=WAIT)  # noqa: E731
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("powerhose-worker "), version
    bad = run("--plugin", plugin("test_plugin"), "--params", "{broken")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr, bad
    missing = run("--plugin", str(runtime_dir / "libnothing.so"))
    assert missing.returncode == 3 and "powerhose-worker: error: plugin" in missing.stderr, missing
    check = run("--plugin", plugin("test_plugin"), "--check-plugin")
    assert check.returncode == 0 and check.stdout == "", check
