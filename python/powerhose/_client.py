"""`powerhose.Client`: the native client plus what reads best in Python.

The native class (``powerhose._native.Client``) does the work: ``execute``,
``submit``, ``ping``, ``workers`` run in Rust with the interpreter released.
This subclass adds the pipelined ``map`` generator, ``execute_many``'s error
choice, ``status`` as a dict, a context manager and ``aexecute`` for asyncio:
each event loop gets one completion queue per client, whose descriptor the
loop watches, so no thread waits for any job.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _native

if TYPE_CHECKING:
    # Imported where used otherwise: a worker process (which imports this
    # package) has no use for asyncio and should not pay for loading it.
    import asyncio

Data = Union[bytes, bytearray, str]
Headers = Union[Mapping[str, Union[str, int]], Iterable[Tuple[str, Union[str, int]]]]
Job = Union[Data, Tuple[Data, Optional[Headers]]]
StrPath = Union[str, "os.PathLike[str]"]


class Client(_native.Client):
    """A connection to a broker (or several), shared safely by any number of
    threads and event loops.

    ``Client(frontend=None, *, curve_secret=None, curve_server=None)``:
    ``frontend`` is an endpoint (``unix://...``, ``ipc://...``,
    ``tcp://host:port``), a list of them (one client of several brokers, which
    spreads jobs over those up), or ``None`` for the default local endpoint
    (where ``powerhose`` and ``powerhose-broker`` listen by default; see
    ``POWERHOSE_RUNTIME_DIR``). ``curve_secret`` (this client's
    ``NAME.key_secret``) and ``curve_server`` (the broker's ``NAME.key``) go
    together, for a broker that takes CURVE. Connecting never blocks: an
    absent broker shows as :class:`~powerhose.BrokerUnreachable` on the first
    call.

    ``execute(data, headers=None, *, service=None, timeout=5.0, retry=False)``
    runs one job: ``data`` is ``bytes`` or ``str`` (sent as UTF-8),
    ``headers`` a mapping (or pairs) of ``str`` to ``str`` or ``int``,
    ``service`` the service to run it (``None``: the only one there is),
    ``timeout`` the seconds to wait, ``retry`` how many times the broker may
    re-send the job to another worker if its worker dies (``True``: once;
    only for idempotent jobs). The interpreter is released while it waits;
    on the main thread Ctrl-C interrupts the wait.
    """

    def __init__(
        self,
        frontend: Union[None, str, Sequence[str]] = None,
        *,
        curve_secret: Optional[StrPath] = None,
        curve_server: Optional[StrPath] = None,
    ) -> None:
        # The arguments went to the native __new__ (which connected).
        self._waiters: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waiter]" = (
            weakref.WeakKeyDictionary()
        )
        self._waiters_lock = threading.Lock()
        # Retires each loop's reader when the client goes, closed or not.
        self._finalizer = weakref.finalize(self, _retire_all, self._waiters, self._waiters_lock)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection. Calls in progress on other threads, and
        asyncio jobs already sent, still get their answers; new calls raise
        :class:`~powerhose.Error`."""
        super().close()
        self._finalizer()

    def status(self, *, timeout: float = 5.0) -> Dict[str, Any]:
        """The broker's status as a dict, as ``powerhose-broker --status
        --json`` prints it: services, workers, counters, latency."""
        status: Dict[str, Any] = json.loads(self.status_json(timeout=timeout))
        return status

    def execute_many(
        self,
        jobs: Iterable[Job],
        *,
        service: Optional[str] = None,
        timeout: float = 5.0,
        return_exceptions: bool = False,
    ) -> List[Any]:
        """Runs every job at once (all in flight together) and returns their
        results in order; ``timeout`` bounds them all together. A job is
        ``data`` or ``(data, headers)``.

        A failed job raises its exception (the first one, in order, once all
        have ended), or with ``return_exceptions=True`` stands in the list in
        its place, as with ``asyncio.gather``.
        """
        results = super().execute_many(jobs, service=service, timeout=timeout)
        if not return_exceptions:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    def map(
        self,
        jobs: Iterable[Job],
        *,
        window: int = 256,
        timeout: float = 5.0,
        service: Optional[str] = None,
    ) -> Iterator[bytes]:
        """Yields the jobs' results in order while keeping up to ``window``
        jobs in flight (pipelined: jobs are taken from ``jobs`` as results
        are consumed). A job is ``data`` or ``(data, headers)``; each gets
        ``timeout`` seconds from when it is sent. A failed job raises its
        exception at its place, which ends the iteration (as
        ``concurrent.futures.Executor.map`` does)."""
        if window < 1:
            raise ValueError("window must be at least 1")
        return self._map(iter(jobs), window, timeout, service)

    def _map(self, jobs: Iterator[Job], window: int, timeout: float, service: Optional[str]) -> Iterator[bytes]:
        pending: Deque[_native.Handle] = collections.deque()
        for job in jobs:
            pending.append(self.submit_job(job, service=service, timeout=timeout))
            if len(pending) >= window:
                yield pending.popleft().wait()
        while pending:
            yield pending.popleft().wait()

    async def aexecute(
        self,
        data: Data,
        headers: Optional[Headers] = None,
        *,
        service: Optional[str] = None,
        timeout: float = 5.0,
        retry: Union[bool, int] = False,
    ) -> bytes:
        """``execute`` for asyncio: the same arguments, result and exceptions.
        No thread waits for it: the answer wakes the event loop. Cancelling
        the awaiting task cancels the job: a job still waiting at the broker
        never runs, and a running one's handler is told (a client of several
        brokers does not tell them: the job runs on, its answer dropped)."""
        import asyncio

        loop = asyncio.get_running_loop()
        waiter = self._waiter(loop)
        future: "asyncio.Future[bytes]" = loop.create_future()
        key = waiter.add(future)
        canceller = None
        try:
            canceller = self.submit_to(
                waiter.completions, key, data, headers, service=service, timeout=timeout, retry=retry
            )
            return await future
        except asyncio.CancelledError:
            if canceller is not None:
                canceller.cancel()
            raise
        finally:
            waiter.forget(key)

    def _waiter(self, loop: asyncio.AbstractEventLoop) -> "_Waiter":
        waiter = self._waiters.get(loop)
        if waiter is None:
            with self._waiters_lock:
                waiter = self._waiters.get(loop)
                if waiter is None:
                    if self.closed:
                        raise _native_closed()
                    waiter = self._waiters[loop] = _Waiter(loop)
        return waiter


def _native_closed() -> BaseException:
    from ._errors import Error

    return Error("the client is closed")


class _Waiter:
    """One event loop's completion queue for one client: the futures awaiting
    answers, by key, and the native queue the answers land in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self.completions = _native.Completions()
        self.futures: Dict[int, "asyncio.Future[bytes]"] = {}
        self.keys = itertools.count()
        self.retiring = False
        self.fd = self.completions.fileno()
        # Needs a loop with add_reader: any selector loop (Linux's default).
        loop.add_reader(self.fd, self.drain)

    def add(self, future: "asyncio.Future[bytes]") -> int:
        key = next(self.keys)
        self.futures[key] = future
        return key

    def forget(self, key: int) -> None:
        # A cancelled task's answer, when it comes, finds no future.
        self.futures.pop(key, None)
        if self.retiring and not self.futures:
            self.stop_watching()

    def drain(self) -> None:
        for key, result in self.completions.take():
            future = self.futures.pop(key, None)
            if future is None or future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self.retiring and not self.futures:
            self.stop_watching()

    def retire(self) -> None:
        """The client is closing: stop watching once no future awaits an
        answer (on the loop's own thread: add/remove_reader are not
        thread-safe)."""
        self.retiring = True
        loop = self.loop()
        if loop is None or loop.is_closed():
            return
        if not self.futures:
            import asyncio

            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop or not loop.is_running():
                self.stop_watching()
            else:
                loop.call_soon_threadsafe(self.stop_watching)

    def stop_watching(self) -> None:
        loop = self.loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.fd)


def _retire_all(waiters: "weakref.WeakKeyDictionary[Any, _Waiter]", lock: threading.Lock) -> None:
    with lock:
        retiring = list(waiters.values())
    for waiter in retiring:
        waiter.retire()
