"""powerhose: call a powerhose worker pool from Python.

A :class:`Client` sends jobs to a broker and returns their results (``bytes``),
from any number of threads, as a pipelined stream (``map``) or from asyncio
(``aexecute``); a :class:`Cluster` starts a pool from Python. Failed jobs
raise an :class:`Error` subclass saying how they failed.

    import powerhose

    with powerhose.Cluster("libecho.so", workers=2) as pool:
        client = pool.client()
        assert client.execute(b"hello") == b"hello"

The work is done by the Rust client (``powerhose._native``); every wait
releases the interpreter.
"""

from __future__ import annotations

from ._client import Client
from ._cluster import Cluster
from ._errors import (
    BadRequest,
    Busy,
    BrokerLost,
    BrokerUnreachable,
    Cancelled,
    Error,
    HandlerError,
    NoWorker,
    Timeout,
    UnknownService,
    WorkerLost,
)
from ._native import Handle, default_frontend
from ._worker import find_worker

__all__ = [
    "Client",
    "Cluster",
    "Handle",
    "default_frontend",
    "find_worker",
    "Error",
    "Timeout",
    "HandlerError",
    "NoWorker",
    "WorkerLost",
    "Busy",
    "UnknownService",
    "BrokerUnreachable",
    "Cancelled",
    "BrokerLost",
    "BadRequest",
]
