"""``Client.aexecute``: a thousand tasks at once, errors, cancellation (a
late answer is dropped), several loops on several threads, and a closed
client's reader leaving its loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import powerhose


def test_a_thousand_tasks_at_once(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()

    async def main() -> List[bytes]:
        return await asyncio.gather(*(client.aexecute(f"task {i}") for i in range(1000)))

    assert asyncio.run(main()) == [f"task {i}".encode() for i in range(1000)]
    # Again on a new loop: each loop gets its own completion queue.
    assert asyncio.run(main())[-1] == b"task 999"


def test_errors_arrive_as_exceptions(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()

    async def main() -> None:
        with pytest.raises(powerhose.HandlerError, match="sorry"):
            await client.aexecute(b"sorry", {"action": "error"})
        with pytest.raises(powerhose.Timeout):
            await client.aexecute(b"", {"action": "sleep", "ms": 2000}, timeout=0.2)
        with pytest.raises(powerhose.UnknownService):
            await client.aexecute(b"", service="nobody")
        with pytest.raises(TypeError):
            await client.aexecute(3)  # type: ignore[arg-type]
        assert await client.aexecute(b"fine", retry=True) == b"fine"

    asyncio.run(main())


def test_a_cancelled_task_stops_waiting(cluster: Callable[..., powerhose.Cluster], runtime_dir: Path) -> None:
    client = cluster(workers=1).client()
    started = runtime_dir / "started"
    problems: List[Dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: problems.append(context))
        slow = asyncio.ensure_future(
            client.aexecute(b"late", {"action": "sleep", "ms": 1000, "file": str(started)}, timeout=10)
        )
        while not started.exists():
            await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # One worker: this job's answer comes after the cancelled one's, which
        # the loop has then seen and dropped.
        assert await client.aexecute(b"next", timeout=10) == b"next"

    asyncio.run(main())
    assert problems == []


def test_loops_on_several_threads_share_a_client(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()
    results: Dict[int, List[bytes]] = {}

    def run(i: int) -> None:
        async def main() -> List[bytes]:
            return await asyncio.gather(*(client.aexecute(f"{i}.{j}") for j in range(200)))

        results[i] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: [f"{i}.{j}".encode() for j in range(200)] for i in range(4)}


def test_closing_the_client_removes_its_reader(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert await client.aexecute(b"x") == b"x"
        fd = client._waiters[loop].fd  # type: ignore[attr-defined]
        pending = asyncio.ensure_future(client.aexecute(b"y", {"action": "sleep", "ms": 300}))
        await asyncio.sleep(0)
        client.close()
        # A job sent before the close still gets its answer...
        assert await pending == b"y"
        # ...and then the loop no longer watches the client's descriptor.
        assert not loop.remove_reader(fd)
        with pytest.raises(powerhose.Error, match="closed"):
            await client.aexecute(b"z")

    asyncio.run(main())


def test_a_cancelled_task_cancels_its_job(cluster: Callable[..., powerhose.Cluster], runtime_dir: Path) -> None:
    client = cluster(workers=1).client()
    started, outcome = runtime_dir / "spin-started", runtime_dir / "spin-outcome"
    spin = {"action": "spin", "ms": 60000, "file": str(started), "outcome": str(outcome)}

    async def main() -> None:
        task = asyncio.ensure_future(client.aexecute(b"spin", spin, timeout=60))
        while not started.exists():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The handler saw the cancel and returned: the one worker is free.
        assert await client.aexecute(b"next", timeout=10) == b"next"

    asyncio.run(main())
    assert outcome.read_text() == "cancelled"
    assert client.status()["counters"]["cancelled"] == 1
