"""The ``powerhose-worker`` program pip installs with the package: running it, and finding it.

The program is the Rust worker (``powerhose::cli::worker_main``) hosted by
this interpreter, so a :class:`~powerhose.Cluster` started from Python has a
worker program wherever pip put the package, without a separate Rust build.
It takes the same flags as the Rust binary and exits with the same codes.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import sysconfig
from typing import List, Optional

from . import _native

WORKER = "powerhose-worker"


def find_worker() -> Optional[str]:
    """The ``powerhose-worker`` program: ``$POWERHOSE_WORKER``, else the one
    pip installed beside this interpreter's scripts (a virtualenv's ``bin``,
    or the user scheme's for ``pip install --user``), else the first on
    ``PATH``; ``None`` if there is none (the native side then looks beside
    the running executable and on ``PATH`` itself, and says where it looked).
    """
    given = os.environ.get("POWERHOSE_WORKER")
    if given:
        return given
    schemes: List[Optional[str]] = [sysconfig.get_default_scheme()] if hasattr(sysconfig, "get_default_scheme") else [None]
    schemes.append(f"{os.name}_user")
    for scheme in schemes:
        try:
            scripts = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        except KeyError:
            continue
        candidate = os.path.join(scripts, WORKER)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(WORKER)


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the worker with ``argv`` (default: this process's arguments)
    and returns its exit status (the console script's entry point)."""
    args = sys.argv[1:] if argv is None else argv
    # The worker stops cleanly on SIGINT and SIGTERM with handlers of its
    # own. Python's SIGINT handler would run too (signal handlers chain) and
    # leave a KeyboardInterrupt to raise once the worker has returned; the
    # default action put in its place is never taken, as the worker's
    # handler replaces it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return _native.worker_main([WORKER, *args])


if __name__ == "__main__":
    sys.exit(main())
