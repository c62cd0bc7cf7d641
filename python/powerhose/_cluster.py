"""`powerhose.Cluster`: a pool started from Python.

The native class starts a broker on a thread of this process and the
workers as processes of the ``powerhose-worker`` program, the one pip
installed with this package unless ``worker_exe=`` or ``$POWERHOSE_WORKER``
names another (see ``powerhose._worker``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

from . import _native
from ._client import Client
from ._worker import find_worker

PathLike = Union[str, "os.PathLike[str]"]


class Cluster(_native.Cluster):
    """A pool started from Python: a broker on a thread of this process and
    ``workers`` worker processes running ``plugin``, supervised (a worker
    that dies is replaced).

    ``Cluster(plugin, *, workers=None, params=None, worker_exe=None,
    plugin_dir=None, job_timeout=None)``: ``plugin`` is the plugin's ``.so``
    (a path, or a bare name searched for in the current directory,
    ``plugin_dir`` and ``$POWERHOSE_PLUGIN_DIR``); ``workers`` defaults to
    one per CPU; ``params`` (a dict, JSON-encoded, or a ``str`` as
    ``--params`` takes it) goes to the plugin's init; ``job_timeout`` is the
    workers' per-job limit in seconds (default 30). Returns once every
    worker has registered; a plugin that cannot load raises
    :class:`~powerhose.Error` with its reason before anything starts.

    Its endpoint is private to it (``frontend``); ``client()`` connects to
    it. Use it as a context manager, or call ``stop()``: jobs in flight
    finish, then the workers and the broker stop.
    """

    def __new__(
        cls,
        plugin: PathLike,
        *,
        workers: Optional[int] = None,
        params: Union[None, str, "dict[str, Any]"] = None,
        worker_exe: Optional[PathLike] = None,
        plugin_dir: Optional[PathLike] = None,
        job_timeout: Optional[float] = None,
    ) -> "Cluster":
        if params is not None and not isinstance(params, str):
            params = json.dumps(params)
        exe = os.fspath(worker_exe) if worker_exe is not None else find_worker()
        return super().__new__(
            cls,
            os.fspath(plugin),
            workers=workers,
            params=params,
            worker_exe=exe,
            plugin_dir=None if plugin_dir is None else os.fspath(plugin_dir),
            job_timeout=job_timeout,
        )

    def client(self) -> Client:
        """A new client of this pool."""
        return Client(self.frontend)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
