"""Type stubs of ``powerhose._native``, the package's native module (python/src/*.rs).

Use the classes through ``powerhose``: ``powerhose.Client`` and
``powerhose.Cluster`` subclass these.
"""

import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

Data = Union[bytes, bytearray, str]
Headers = Union[Mapping[str, Union[str, int]], Iterable[Tuple[str, Union[str, int]]]]
Job = Union[Data, Tuple[Data, Optional[Headers]]]
StrPath = Union[str, "os.PathLike[str]"]
_Client = TypeVar("_Client", bound="Client")
_Cluster = TypeVar("_Cluster", bound="Cluster")

def worker_main(argv: Sequence[StrPath]) -> int:
    """Runs the ``powerhose-worker`` program with ``argv`` (program name
    first) and returns its exit status; serves until SIGTERM or SIGINT."""

def default_frontend() -> str:
    """The default front endpoint (``unix://<runtime dir>/front.sock``)."""

class Handle:
    """A job sent without waiting (``Client.submit``)."""

    def done(self) -> bool:
        """Whether the result is there (``wait`` returns at once)."""
    def cancel(self) -> bool:
        """Cancels the job: ``wait`` then raises ``Cancelled`` at once, and
        the broker and the worker's handler are told. False if its result
        came first."""
    def wait(self) -> bytes:
        """The job's result, or its exception raised; waits (within the
        job's timeout) with the interpreter released. Once only."""

class Canceller:
    """Cancels a job sent with ``submit_to``."""

    def cancel(self) -> bool:
        """Cancels the job; False if its result came first."""

class Completions:
    """A completion queue for one event loop's jobs of one client (asyncio)."""

    def __init__(self) -> None: ...
    def fileno(self) -> int:
        """The eventfd the loop watches: readable once answers wait."""
    def take(self) -> List[Tuple[int, Union[bytes, BaseException]]]:
        """Every answer that arrived: (key, bytes or exception)."""

class Client:
    """A connection to a broker, or several; see ``powerhose.Client``."""

    def __new__(
        cls: Type[_Client],
        frontend: Union[None, str, Sequence[str]] = None,
        *,
        curve_secret: Optional[StrPath] = None,
        curve_server: Optional[StrPath] = None,
    ) -> _Client: ...
    @property
    def endpoints(self) -> List[str]:
        """The broker endpoints this client uses."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def execute(
        self,
        data: Data,
        headers: Optional[Headers] = None,
        *,
        service: Optional[str] = None,
        timeout: float = 5.0,
        retry: Union[bool, int] = False,
    ) -> bytes:
        """Runs one job and returns its result, or raises how it failed
        (a ``powerhose.Error`` subclass). The interpreter is released while
        it waits; on the main thread Ctrl-C interrupts the wait."""
    def execute_many(
        self, jobs: Iterable[Job], *, service: Optional[str] = None, timeout: float = 5.0
    ) -> List[Any]:
        """Runs every job at once; their results, or exceptions in place."""
    def submit(
        self,
        data: Data,
        headers: Optional[Headers] = None,
        *,
        service: Optional[str] = None,
        timeout: float = 5.0,
        retry: Union[bool, int] = False,
    ) -> Handle:
        """Sends a job and returns at once; ``Handle.wait()`` for its result."""
    def submit_job(self, job: Job, *, service: Optional[str] = None, timeout: float = 5.0) -> Handle:
        """``submit`` for a job given as ``data`` or ``(data, headers)``."""
    def submit_to(
        self,
        completions: Completions,
        key: int,
        data: Data,
        headers: Optional[Headers] = None,
        *,
        service: Optional[str] = None,
        timeout: float = 5.0,
        retry: Union[bool, int] = False,
    ) -> Canceller:
        """Sends a job whose result lands in ``completions`` under ``key``."""
    def ping(self, *, timeout: float = 5.0) -> int:
        """The broker's process id (answered by the broker itself)."""
    def workers(self, service: Optional[str] = None, *, timeout: float = 5.0) -> int:
        """How many workers serve ``service`` (all services when ``None``)."""
    def status_json(self, *, timeout: float = 5.0) -> str:
        """The broker's status as JSON (``powerhose-broker --status --json``)."""
    def close(self) -> None:
        """Closes the connection; calls in progress finish."""

class Cluster:
    """A pool started from Python; see ``powerhose.Cluster``."""

    def __new__(
        cls: Type[_Cluster],
        plugin: str,
        *,
        workers: Optional[int] = None,
        params: Optional[str] = None,
        worker_exe: Optional[StrPath] = None,
        plugin_dir: Optional[StrPath] = None,
        job_timeout: Optional[float] = None,
    ) -> _Cluster: ...
    @property
    def frontend(self) -> str:
        """The endpoint this pool's clients connect to."""
    @property
    def plugin_path(self) -> str:
        """The plugin file the workers load, as an absolute path."""
    @property
    def running(self) -> bool:
        """Whether the pool still runs."""
    def reload(self) -> None:
        """Replaces every worker, one at a time (in the background)."""
    def scale(self, workers: int) -> None:
        """Runs ``workers`` workers from now on (in the background)."""
    def stop(self) -> None:
        """Stops the pool (jobs in flight finish); again does nothing."""
