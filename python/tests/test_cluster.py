"""``powerhose.Cluster``: a pool started from Python with the worker program
pip installed (or another one), params for the plugin, scaling, stopping."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Callable

import pytest

import powerhose
from conftest import wait_until


def test_a_cluster_is_a_context_manager(plugin: Callable[[str], str], runtime_dir: Path) -> None:
    with powerhose.Cluster(plugin("echo"), workers=2) as pool:
        assert pool.running
        assert pool.frontend.startswith(f"unix://{runtime_dir}/")
        assert pool.plugin_path == Path(plugin("echo")).resolve()
        client = pool.client()
        assert client.execute(b"echoed") == b"echoed"
        assert client.workers() == 2
    assert not pool.running
    with pytest.raises(powerhose.BrokerUnreachable):
        client.execute(b"x", timeout=0.5)
    pool.stop()  # again: nothing


def test_workers_run_the_installed_worker_script(cluster: Callable[..., powerhose.Cluster]) -> None:
    script = powerhose.find_worker()
    assert script is not None and os.path.basename(script) == "powerhose-worker"
    pool = cluster(workers=1)
    pid = int(pool.client().execute(b"", {"action": "pid"}))
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        argv = cmdline.read().split(b"\0")
    # The script, run by its interpreter (its #! line).
    assert argv[1] == script.encode(), argv
    assert b"python" in os.path.basename(argv[0]), argv


def test_worker_exe_and_its_variable_name_another_program(
    cluster: Callable[..., powerhose.Cluster], bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rust_worker = str(bin_dir / "powerhose-worker")
    for pool in (cluster(workers=1, worker_exe=rust_worker), _with_env(cluster, monkeypatch, rust_worker)):
        pid = int(pool.client().execute(b"", {"action": "pid"}))
        assert os.readlink(f"/proc/{pid}/exe") == rust_worker


def _with_env(
    cluster: Callable[..., powerhose.Cluster], monkeypatch: pytest.MonkeyPatch, exe: str
) -> powerhose.Cluster:
    monkeypatch.setenv("POWERHOSE_WORKER", exe)
    assert powerhose.find_worker() == exe
    return cluster(workers=1)


def test_params_reach_the_plugin(cluster: Callable[..., powerhose.Cluster]) -> None:
    as_dict = cluster(workers=1, params={"version_tag": "-dict"}).client()
    assert as_dict.execute(b"", {"action": "version"}).endswith(b"-dict")
    as_text = cluster(workers=1, params='{"version_tag": "-text"}').client()
    assert as_text.execute(b"", {"action": "version"}).endswith(b"-text")


def test_scale_and_reload(cluster: Callable[..., powerhose.Cluster]) -> None:
    pool = cluster(workers=1)
    client = pool.client()
    pool.scale(3)
    wait_until("three workers", lambda: client.workers() == 3)
    before = {w["pid"] for w in client.status()["workers"]}
    pool.reload()
    wait_until("every worker replaced", lambda: before.isdisjoint(w["pid"] for w in client.status()["workers"]))
    assert client.execute(b"after reload") == b"after reload"


def test_a_crypto_job_pool(cluster: Callable[..., powerhose.Cluster]) -> None:
    client = cluster("crypto_job", workers=2, params={"hmac_key": "secret"}).client()
    messages = [f"message {i}".encode() for i in range(50)]
    jobs = [(m, {"op": "hmac"}) for m in messages]
    expected = [hmac.new(b"secret", m, hashlib.sha256).digest() for m in messages]
    assert list(client.map(jobs, window=8, timeout=30)) == expected
