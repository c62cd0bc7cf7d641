"""Every exception a job or a call can end in, each brought about for real:
its class, its place under ``powerhose.Error``, its message and attributes."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path
from typing import Callable

import pytest

import powerhose
from conftest import Processes, wait_until

SUBCLASSES = [
    powerhose.Timeout,
    powerhose.HandlerError,
    powerhose.NoWorker,
    powerhose.WorkerLost,
    powerhose.Busy,
    powerhose.UnknownService,
    powerhose.BrokerUnreachable,
    powerhose.BrokerLost,
    powerhose.BadRequest,
]


def test_every_exception_is_an_error() -> None:
    for cls in SUBCLASSES:
        assert issubclass(cls, powerhose.Error) and issubclass(cls, Exception)
    e = pickle.loads(pickle.dumps(powerhose.HandlerError("job failed in worker 7: no", 7, "no")))
    assert (str(e), e.pid, e.message) == ("job failed in worker 7: no", 7, "no")
    t = pickle.loads(pickle.dumps(powerhose.Timeout("late", 9)))
    assert (str(t), t.pid) == ("late", 9)


def test_handler_error_has_the_pid_and_message(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()
    with pytest.raises(powerhose.HandlerError) as caught:
        client.execute("it broke: ü", {"action": "error"})
    e = caught.value
    assert e.message == "it broke: ü"
    assert e.pid > 0 and e.pid != os.getpid()
    assert str(e) == f"job failed in worker {e.pid}: it broke: ü"
    # A panicking handler is a handler error too; the worker lives on.
    with pytest.raises(powerhose.HandlerError):
        client.execute(b"", {"action": "panic"})
    assert client.execute(b"after") == b"after"


def test_timeout_of_the_caller_and_of_the_worker(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster(job_timeout=0.5).client()
    started = time.monotonic()
    with pytest.raises(powerhose.Timeout) as caught:
        client.execute(b"", {"action": "hang"}, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert caught.value.pid is None
    # The worker's own limit: reported with the worker's pid.
    with pytest.raises(powerhose.Timeout) as caught:
        client.execute(b"", {"action": "sleep", "ms": 3000}, timeout=10)
    assert caught.value.pid is not None and caught.value.pid != os.getpid()


def test_unknown_service(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()
    with pytest.raises(powerhose.UnknownService, match="nobody"):
        client.execute(b"x", service="nobody")


def test_no_worker_once_the_services_workers_are_gone(procs: Processes) -> None:
    procs.broker("--no-worker-grace-ms", "100")
    worker = procs.worker("--service", "gone")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.stderr()
    client = powerhose.Client()
    wait_until("the worker to unregister", lambda: client.workers("gone") == 0)
    with pytest.raises(powerhose.NoWorker, match="gone"):
        client.execute(b"x", service="gone", timeout=10)


def test_worker_lost_when_its_worker_is_killed_mid_job(
    cluster: Callable[..., powerhose.Cluster], runtime_dir: Path
) -> None:
    client = cluster(workers=1).client()
    started = runtime_dir / "started"
    handle = client.submit(b"", {"action": "sleep", "ms": 20000, "file": str(started)}, timeout=30)
    wait_until("the job to start", started.exists)
    wait_until("the worker to write its pid", lambda: started.read_text() != "")
    os.kill(int(started.read_text()), signal.SIGKILL)
    with pytest.raises(powerhose.WorkerLost):
        handle.wait()
    # The supervisor replaces it.
    assert client.execute(b"again", timeout=30) == b"again"


def test_busy_when_the_queue_is_full(procs: Processes) -> None:
    procs.broker("--max-queue", "2", "--prefetch-budget-ms", "0")
    procs.worker()
    client = powerhose.Client()
    # The one worker is held; the queue fills behind it.
    holding = client.submit(b"", {"action": "sleep", "ms": 3000}, timeout=10)
    wait_until("the worker to take the job", lambda: client.status()["workers"][0]["state"] == "busy")
    results = client.execute_many([b"x"] * 10, timeout=10, return_exceptions=True)
    assert any(isinstance(r, powerhose.Busy) for r in results), results
    with pytest.raises(powerhose.Busy):
        client.execute_many([b"x"] * 10, timeout=10)
    assert holding.wait() == b""


def test_bad_request_for_a_job_over_the_message_limit(procs: Processes, runtime_dir: Path) -> None:
    # Over ZeroMQ the broker answers it (a local connection is dropped instead).
    front, back = f"ipc://{runtime_dir}/front", f"ipc://{runtime_dir}/back"
    procs.broker("--frontend", front, "--backend", back, "--max-message-bytes", "10000")
    procs.worker("--backend", back, "--max-message-bytes", "10000", front=front)
    client = powerhose.Client(front)
    with pytest.raises(powerhose.BadRequest, match="max-message-bytes"):
        client.execute(b"x" * 20000)
    assert client.execute(b"small") == b"small"


def test_broker_unreachable(runtime_dir: Path) -> None:
    for front in (None, f"unix://{runtime_dir}/nobody.sock", f"ipc://{runtime_dir}/nobody"):
        client = powerhose.Client(front)
        started = time.monotonic()
        with pytest.raises(powerhose.BrokerUnreachable):
            client.execute(b"x", timeout=0.5)
        assert time.monotonic() - started < 5
        with pytest.raises(powerhose.BrokerUnreachable):
            client.ping(timeout=0.5)


def test_broker_lost_by_a_client_of_several(procs: Processes, runtime_dir: Path) -> None:
    fronts, brokers = [], []
    for name in ("a", "b"):
        front, back = f"ipc://{runtime_dir}/{name}-front", f"ipc://{runtime_dir}/{name}-back"
        brokers.append(procs.broker("--frontend", front, "--backend", back, name=f"broker-{name}"))
        procs.worker("--backend", back, front=front, name=f"worker-{name}")
        fronts.append(front)
    client = powerhose.Client(fronts)
    started = runtime_dir / "started"
    handle = client.submit(b"", {"action": "sleep", "ms": 20000, "file": str(started)}, timeout=30)
    wait_until("the job to start", lambda: started.exists() and started.read_text() != "")
    # Which broker has it: the one whose worker runs it.
    pid = int(started.read_text())
    holder = next(b for b, f in zip(brokers, fronts) if pid in _worker_pids(f))
    holder.signal(signal.SIGKILL)
    with pytest.raises(powerhose.BrokerLost):
        handle.wait()


def _worker_pids(front: str) -> set:  # type: ignore[type-arg]
    return {w["pid"] for w in powerhose.Client(front).status()["workers"]}


def test_plain_errors(runtime_dir: Path, plugin: Callable[[str], str]) -> None:
    with pytest.raises(powerhose.Error, match="not found"):
        powerhose.Cluster(str(runtime_dir / "libnothing.so"), workers=1)
    with pytest.raises(powerhose.Error):
        powerhose.Client(curve_secret=runtime_dir / "none", curve_server=runtime_dir / "none")
    with pytest.raises(ValueError):
        powerhose.Client(curve_secret=runtime_dir / "none")
    with pytest.raises(TypeError):
        powerhose.Client(42)  # type: ignore[arg-type]
    with pytest.raises(powerhose.Error, match="failed to initialise: no init"):
        powerhose.Cluster(plugin("test_plugin"), workers=1, params={"fail_init": "no init"})
