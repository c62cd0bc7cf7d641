"""Every method of ``powerhose.Client`` against a real pool (a ``Cluster``
of test_plugin workers): arguments, results, batches, handles, closing."""

from __future__ import annotations

import os
import time
import subprocess
from pathlib import Path
from typing import Callable

import pytest

import powerhose
from conftest import Processes, free_port, wait_until


@pytest.fixture
def client(cluster: Callable[..., powerhose.Cluster]) -> powerhose.Client:
    return cluster().client()


def test_execute_takes_bytes_str_and_bytearray(client: powerhose.Client) -> None:
    assert client.execute(b"hello") == b"hello"
    assert client.execute("héllo") == "héllo".encode()
    assert client.execute(bytearray(b"\x00\xff")) == b"\x00\xff"
    assert client.execute(b"") == b""
    big = os.urandom(1 << 20)
    assert client.execute(big) == big
    with pytest.raises(TypeError, match="bytes or str"):
        client.execute(42)  # type: ignore[arg-type]


def test_headers_service_and_retry(client: powerhose.Client) -> None:
    pid = client.execute(b"", {"action": "pid"})
    assert int(pid) > 0
    assert int(client.execute(b"", [("action", "pid")])) > 0
    assert client.execute(b"x", {"action": "sleep", "ms": 10}) == b"x"
    assert client.execute(b"x", service="test_plugin") == b"x"
    assert client.execute(b"x", retry=True) == b"x"
    assert client.execute(b"x", retry=3) == b"x"
    with pytest.raises(TypeError):
        client.execute(b"x", {"action": object()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="timeout"):
        client.execute(b"x", timeout=0)
    with pytest.raises(ValueError, match="retry"):
        client.execute(b"x", retry=-1)


def test_ping_status_workers(cluster: Callable[..., powerhose.Cluster]) -> None:
    pool = cluster(workers=3)
    client = pool.client()
    # The broker runs on a thread of this process.
    assert client.ping() == os.getpid()
    assert client.workers() == 3
    assert client.workers("test_plugin") == 3
    assert client.workers("nobody") == 0
    status = client.status()
    assert isinstance(status, dict)
    assert status["pid"] == os.getpid()
    assert len(status["workers"]) == 3
    assert "test_plugin" in [s["name"] for s in status["services"]]
    assert client.endpoints == [pool.frontend]


def test_default_endpoint_is_the_runtime_dirs(procs: Processes) -> None:
    procs.broker()
    procs.worker()
    client = powerhose.Client()
    assert client.endpoints == [powerhose.default_frontend()]
    assert client.execute(b"default") == b"default"


def test_execute_many(client: powerhose.Client) -> None:
    jobs = [f"job {i}".encode() for i in range(500)]
    assert client.execute_many(jobs) == jobs
    assert client.execute_many([]) == []
    mixed = [b"a", (b"boom", {"action": "error"}), (b"c", None), "d"]
    with pytest.raises(powerhose.HandlerError, match="boom"):
        client.execute_many(mixed)
    results = client.execute_many(mixed, return_exceptions=True)
    assert results[0] == b"a" and results[2] == b"c" and results[3] == b"d"
    assert isinstance(results[1], powerhose.HandlerError) and results[1].message == "boom"


def test_map_yields_in_order_with_any_window(client: powerhose.Client) -> None:
    jobs = [f"{i}".encode() for i in range(1000)]
    assert list(client.map(jobs)) == jobs
    assert list(client.map(iter(jobs[:50]), window=1)) == jobs[:50]
    assert list(client.map(((j, {"action": "echo"}) for j in jobs[:20]), window=7)) == jobs[:20]
    assert list(client.map([])) == []
    with pytest.raises(ValueError):
        client.map(jobs, window=0)


def test_map_raises_a_failed_job_at_its_place(client: powerhose.Client) -> None:
    jobs = [b"0", b"1", (b"two failed", {"action": "error"}), b"3"]
    results = client.map(jobs, window=4)
    assert next(results) == b"0"
    assert next(results) == b"1"
    with pytest.raises(powerhose.HandlerError, match="two failed"):
        next(results)


def test_map_is_lazy(client: powerhose.Client) -> None:
    taken = []

    def jobs():  # type: ignore[no-untyped-def]
        for i in range(100):
            taken.append(i)
            yield str(i)

    results = client.map(jobs(), window=10)
    assert next(results) == b"0"
    # One window's worth was sent, not the whole iterable.
    assert len(taken) <= 11


def test_submit_and_handles(client: powerhose.Client) -> None:
    handles = [client.submit(f"{i}", {"action": "echo"}) for i in range(100)]
    assert [h.wait() for h in handles] == [f"{i}".encode() for i in range(100)]
    assert handles[0].done()
    with pytest.raises(RuntimeError, match="already taken"):
        handles[0].wait()
    failed = client.submit(b"nope", {"action": "error"})
    with pytest.raises(powerhose.HandlerError):
        failed.wait()


def test_close_and_context_manager(cluster: Callable[..., powerhose.Cluster]) -> None:
    pool = cluster()
    with pool.client() as client:
        assert client.execute(b"x") == b"x"
        assert not client.closed
    assert client.closed
    with pytest.raises(powerhose.Error, match="closed"):
        client.execute(b"x")
    client.close()  # again: nothing


def test_several_brokers_in_one_client(procs: Processes, runtime_dir: Path) -> None:
    fronts = []
    for name in ("a", "b"):
        front, back = f"ipc://{runtime_dir}/{name}-front", f"ipc://{runtime_dir}/{name}-back"
        procs.broker("--frontend", front, "--backend", back, name=f"broker-{name}")
        procs.worker("--backend", back, front=front, name=f"worker-{name}")
        fronts.append(front)
    client = powerhose.Client(fronts)
    assert client.endpoints == fronts
    pids = {int(client.execute(b"", {"action": "pid"})) for _ in range(20)}
    assert len(pids) == 2, "jobs go to both brokers' workers"
    assert list(client.map([b"x"] * 100)) == [b"x"] * 100


def test_curve_credentials(procs: Processes, runtime_dir: Path, bin_dir: Path, plugin: Callable[[str], str]) -> None:
    keygen = str(bin_dir / "powerhose-keygen")
    allowed, other = runtime_dir / "allowed", runtime_dir / "other"
    for name, where in (("server", runtime_dir), ("client", allowed), ("stranger", other)):
        where.mkdir(exist_ok=True)
        subprocess.run([keygen, name, "--dir", str(where)], check=True, capture_output=True, timeout=30)
    # The allow-list holds the client's public certificate only.
    secret = runtime_dir / "client.key_secret"
    (allowed / "client.key_secret").rename(secret)
    front, back = f"tcp://127.0.0.1:{free_port()}", f"ipc://{runtime_dir}/back"
    server = runtime_dir / "server.key"
    client = powerhose.Client(front, curve_secret=secret, curve_server=server)
    flags = ["--curve-secret", str(runtime_dir / "server.key_secret"), "--allow-clients", str(allowed)]
    procs.broker("--frontend", front, "--backend", back, *flags, client=client)
    procs.spawn([str(bin_dir / "powerhose-worker"), "--plugin", plugin("test_plugin"), "--backend", back], "worker")
    wait_until("the worker to register", lambda: client.workers() == 1)
    assert client.execute(b"over curve") == b"over curve"
    stranger = powerhose.Client(front, curve_secret=str(other / "stranger.key_secret"), curve_server=str(server))
    with pytest.raises(powerhose.BrokerUnreachable):
        stranger.ping(timeout=0.5)


def test_a_handle_cancels_its_job(cluster: Callable[..., powerhose.Cluster], runtime_dir: Path) -> None:
    client = cluster(workers=1).client()
    started, outcome = runtime_dir / "spin-started", runtime_dir / "spin-outcome"
    handle = client.submit(b"spin", {"action": "spin", "ms": 60000, "file": str(started), "outcome": str(outcome)})
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.01)
    assert handle.cancel()
    with pytest.raises(powerhose.Cancelled):
        handle.wait()
    assert client.execute(b"next", timeout=10) == b"next"
    assert outcome.read_text() == "cancelled"
    assert not handle.cancel(), "its result was taken: nothing to cancel"
