"""Fixtures of the Python package's tests: the repository's plugins and
binaries (built once), a private runtime directory per test, and pools
(``powerhose.Cluster``, or ``powerhose-broker`` and ``powerhose-worker``
processes) that are always stopped and killed at the end of their test.

``tests/python_package.rs`` runs these tests from ``cargo test`` and passes
the binaries' and plugins' directory in ``POWERHOSE_TEST_BIN_DIR``; run
alone (``python3 -m pytest python/tests``), they build them with cargo.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import powerhose

REPO = Path(__file__).resolve().parents[2]
# Generous: a busy 2-core machine runs these; each wait ends as soon as its
# condition holds.
WAIT = 30.0


def wait_until(what: str, cond: Callable[[], bool], timeout: float = WAIT) -> None:
    """Polls ``cond`` every 10 ms until it holds; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The directory of the debug binaries and example plugins."""
    given = os.environ.get("POWERHOSE_TEST_BIN_DIR")
    if given:
        return Path(given)
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "powerhose", "-p", "echo", "-p", "crypto_job", "-p", "test_plugin"],
        cwd=REPO,
        check=True,
        timeout=1800,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug"


@pytest.fixture(scope="session")
def plugin(bin_dir: Path) -> Callable[[str], str]:
    """The path of an example plugin's library, by crate name."""

    def path(name: str) -> str:
        lib = bin_dir / f"lib{name}.so"
        assert lib.exists(), f"{lib} missing after the build"
        return str(lib)

    return path


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime directory for this test (``POWERHOSE_RUNTIME_DIR``):
    the default endpoints and every cluster's live there. Short, as socket
    paths are at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ph-"))
    monkeypatch.setenv("POWERHOSE_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cluster(runtime_dir: Path, plugin: Callable[[str], str]) -> Iterator[Callable[..., powerhose.Cluster]]:
    """Starts ``powerhose.Cluster``s (test_plugin unless told), stopped at the end."""
    started: List[powerhose.Cluster] = []

    def start(name: str = "test_plugin", **options: object) -> powerhose.Cluster:
        options.setdefault("workers", 2)
        pool = powerhose.Cluster(plugin(name), **options)  # type: ignore[arg-type]
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.stop()


def free_port() -> int:
    """A loopback tcp port free now, below the kernel's ephemeral range (a
    port from it may be taken as a connection's source port before the
    broker binds it; tests/common/ports.rs says more)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        high = int(ports.read().split()[0])
    for _ in range(1000):
        port = random.randrange(20000, max(high, 21000))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free loopback port")


class Proc:
    """A child process whose stderr goes to a log file; killed at the end."""

    def __init__(self, args: List[str], log: Path, **kwargs: object) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.popen = subprocess.Popen(args, stderr=err, **kwargs)  # type: ignore[call-overload]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> Optional[int]:
        """The exit code, or ``None`` if still running after ``timeout`` s."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(WAIT)


class Processes:
    """Brokers and workers of the repository's binaries, for tests that need
    their flags (a small queue, a fast heartbeat) or to kill them."""

    def __init__(self, bin_dir: Path, plugin: Callable[[str], str], runtime_dir: Path) -> None:
        self.bin_dir, self.plugin, self.dir = bin_dir, plugin, runtime_dir
        self.procs: List[Proc] = []

    def spawn(self, args: List[str], name: str, **kwargs: object) -> Proc:
        proc = Proc(args, self.dir / f"{name}.log", **kwargs)
        self.procs.append(proc)
        return proc

    def broker(self, *flags: str, name: str = "broker", client: Optional[powerhose.Client] = None) -> Proc:
        """``powerhose-broker`` with ``flags`` (default endpoints unless they
        say otherwise), up when this returns (it answered ``client``'s ping,
        a client of its front by default)."""
        proc = self.spawn([str(self.bin_dir / "powerhose-broker"), *flags], name)
        front = flags[flags.index("--frontend") + 1] if "--frontend" in flags else None
        try:
            (client or powerhose.Client(front)).ping(timeout=WAIT)
        except powerhose.Error:
            pytest.fail(f"broker not up:\n{proc.stderr()}")
        return proc

    def worker(
        self,
        *flags: str,
        front: Optional[str] = None,
        name: str = "worker",
        program: Optional[str] = None,
        count: int = 1,
    ) -> Proc:
        """``powerhose-worker --plugin test_plugin`` with ``flags``; when this
        returns, the broker at ``front`` (default: the default one) has
        ``count`` workers registered in all."""
        exe = program or str(self.bin_dir / "powerhose-worker")
        proc = self.spawn([exe, "--plugin", self.plugin("test_plugin"), *flags], name)
        client = powerhose.Client(front)

        def registered() -> bool:
            assert proc.popen.poll() is None, f"worker exited:\n{proc.stderr()}"
            return client.workers(timeout=WAIT) >= count

        wait_until("the worker to register", registered)
        return proc


@pytest.fixture
def procs(bin_dir: Path, plugin: Callable[[str], str], runtime_dir: Path) -> Iterator[Processes]:
    """Starts broker and worker processes; every one is killed at the end."""
    processes = Processes(bin_dir, plugin, runtime_dir)
    yield processes
    for proc in reversed(processes.procs):
        proc.kill()
