"""The exceptions powerhose raises: :class:`Error` and one subclass per way a job can fail.

The native module builds them (``powerhose._native`` imports this module), so
``isinstance`` checks, ``except`` clauses and attributes work as for any
Python exception. Each message is the Rust client's one-line description.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "Timeout",
    "HandlerError",
    "NoWorker",
    "WorkerLost",
    "Busy",
    "UnknownService",
    "BrokerUnreachable",
    "BrokerLost",
    "BadRequest",
]


class Error(Exception):
    """Anything powerhose reports: the base of every exception below.

    Raised as itself for what has no subclass (a bad endpoint, an unreadable
    CURVE certificate, a plugin a :class:`~powerhose.Cluster` cannot load,
    a closed client, ...).
    """


class Timeout(Error):
    """No answer in time: the caller's own wait ran out, or the broker or
    worker reported the job's time as up (it expired in the queue, or the
    handler ran past the worker's time limit; ``pid`` is then the reporting
    process's, else ``None``)."""

    def __init__(self, text: str, pid: Optional[int] = None) -> None:
        super().__init__(text)
        self.pid: Optional[int] = pid

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickle (multiprocessing, concurrent.futures) with the pid.
        return (type(self), (self.args[0], self.pid))


class HandlerError(Error):
    """The plugin's handler returned an error (or panicked) for this job.

    ``pid`` is the worker process that ran it and ``message`` the handler's
    own message (``str(e)`` says both).
    """

    def __init__(self, text: str, pid: int = 0, message: str = "") -> None:
        super().__init__(text)
        self.pid: int = pid
        self.message: str = message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Pickle (multiprocessing, concurrent.futures) with every attribute.
        return (type(self), (self.args[0], self.pid, self.message))


class NoWorker(Error):
    """No worker serves the job's service, and none came within the broker's
    short grace period."""


class WorkerLost(Error):
    """The worker running the job died or went silent, and the job allowed no
    (more) retries (see ``retry``)."""


class Busy(Error):
    """The service's queue is full (the broker's ``--max-queue`` or
    ``--max-queue-bytes``): the job was not taken. Try again later."""


class Cancelled(Error):
    """The job was cancelled (``Handle.cancel``, or the task awaiting
    ``aexecute`` was cancelled) before its answer came."""


class UnknownService(Error):
    """No worker has ever served the service named, while others exist."""


class BrokerUnreachable(Error):
    """No broker answered on the endpoint within the wait (nothing listens
    there), or a local broker refused the connection (it takes local
    connections from its own user only)."""


class BrokerLost(Error):
    """The connection to a broker dropped with the job on it, and the job
    allowed no retry: it may or may not have run. Seen by a client of
    several brokers; with ``retry`` the job goes to another broker instead."""


class BadRequest(Error):
    """The broker could not accept the request as sent: no service named while
    several are served, a malformed message, or a control request refused."""
