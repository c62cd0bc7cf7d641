"""One client shared by many threads: answers never cross, a job that times
out holds up no other thread, and a wait releases the interpreter (a
pure-Python thread keeps running while another waits on a 2-s job)."""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List

import powerhose

THREADS = 8
JOBS = 200


def run_threads(target: Callable[[int], None], n: int) -> None:
    """Runs ``target(i)`` on ``n`` threads; re-raises the first failure."""
    errors: List[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a client thread is stuck"
    if errors:
        raise errors[0]


def test_threads_share_one_client(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster().client()
    seen: Dict[int, int] = {}

    def work(i: int) -> None:
        for j in range(JOBS):
            payload = f"thread {i} job {j}".encode()
            if j % 3 == 0:
                assert client.execute(payload, {"action": "echo"}) == payload
            elif j % 3 == 1:
                assert client.submit(payload).wait() == payload
            else:
                assert client.execute_many([payload, payload]) == [payload, payload]
        seen[i] = JOBS

    run_threads(work, THREADS)
    assert seen == {i: JOBS for i in range(THREADS)}


def test_a_job_timing_out_holds_up_no_other_thread(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster(workers=2).client()
    answered = [0] * 3
    stop = threading.Event()
    outcome: Dict[str, object] = {}

    def slow() -> None:
        started = time.monotonic()
        try:
            client.execute(b"", {"action": "sleep", "ms": 3000}, timeout=0.5)
        except powerhose.Timeout as e:
            outcome["timeout"] = e
        outcome["took"] = time.monotonic() - started
        stop.set()

    def fast(i: int) -> None:
        while not stop.is_set():
            assert client.execute(f"{i}") == f"{i}".encode()
            answered[i] += 1

    others = threading.Thread(target=run_threads, args=(fast, 3))
    others.start()
    slow()
    others.join(60)
    assert isinstance(outcome.get("timeout"), powerhose.Timeout)
    assert 0.5 <= outcome["took"] < 3  # type: ignore[operator]
    # The other worker kept answering the others throughout.
    assert all(n > 0 for n in answered), answered


def test_a_wait_releases_the_interpreter(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster(workers=1).client()
    waiting = threading.Event()
    done = threading.Event()
    ticks: List[float] = []

    def count() -> None:
        # Pure Python: it runs only while no other thread holds the GIL.
        n = 0
        while not done.is_set():
            n += 1
            if n % 1000 == 0:
                ticks.append(time.monotonic())

    def wait_on_a_job() -> None:
        waiting.set()
        assert client.execute(b"slow", {"action": "sleep", "ms": 2000}, timeout=10) == b"slow"
        done.set()

    counter = threading.Thread(target=count)
    counter.start()
    waiter = threading.Thread(target=wait_on_a_job)
    waiter.start()
    waiting.wait(10)
    started = time.monotonic()
    waiter.join(30)
    done.set()
    counter.join(30)
    during = [t for t in ticks if t >= started]
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert during and during[-1] - started > 1.5, "the counter ran through the wait"
    # Held, the GIL would stop the counter for the whole 2 s.
    assert max(gaps) < 1.0, max(gaps)
