"""A real two-node Ray cluster on this machine, for the sweep tests.

`ray start --head` plus a second `ray start --address=...` (one CPU each, own temp folder, no
dashboard), as two machines of a cluster would run them, all on 127.0.0.1: Ray turns a node
address of 127.0.0.1 into the machine's routable one, except where multi-node clusters are off
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, as on a Mac); so the head and the drivers run with that
off, and the second node, which must have it on, takes its address from its route to the head's
127.0.0.1.

Each `ray start` runs in a session of its own, and every daemon it leaves behind stays in it (Ray's
Python daemons overwrite their /proc environ with their process title, so an environment marker
cannot find them); teardown ends exactly those sessions' processes, by pid: SIGTERM, then SIGKILL
for what is left. `ray stop` is not used: it would stop every Ray on the machine, other people's
too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dvc_fixtures import BIN, in_sessions, own_processes
from remote_servers import free_port, require

OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MB; tasks pass only small objects


@dataclass
class RayCluster:
    gcs: str  # host:port of the head's GCS, what `ray start --address` and drivers on a node use
    client: str  # ray://host:port, the Ray client server, what a laptop outside the cluster uses
    env: dict[str, str]  # a driver's environment on this machine (see the module's doc)
    tmp: Path  # the nodes' TMPDIR: each task's clone lives there while it runs
    mark: str
    sessions: list[int]

    def processes(self) -> list[int]:
        return sorted(set(own_processes(self.mark)) | set(in_sessions(self.sessions)))


# `ray start` for a second node, which Ray would give the machine's routable address: here the
# node takes 127.0.0.1, as the head does, so every byte stays on the loopback.
LOOPBACK_RAY = (
    "import sys, ray._private.services as s; from ray.scripts.scripts import main; "
    "s.resolve_ip_for_localhost = lambda host: host; "
    "s.get_node_ip_address = lambda address=None: '127.0.0.1'; "
    "sys.argv[0] = 'ray'; sys.exit(main())"
)


def _ray(args: list[str], env: dict[str, str], sessions: list[int]) -> None:
    """`ray start ...` in a new session (recorded before it can leave any daemon behind)."""
    proc = subprocess.Popen(
        [str(BIN / "python"), "-c", LOOPBACK_RAY, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    sessions.append(proc.pid)
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} exited {proc.returncode}\n{output}")


def start_cluster(base_env: dict[str, str], nodes: int = 2) -> Iterator[RayCluster]:
    """Start the cluster; yield it; end every process of it, whatever happened."""
    require("ray", "grpc", install=".[cluster]")
    # Short: Ray's unix sockets live below it (108 bytes at most for a socket path).
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    tmp = root / "t"
    tmp.mkdir()
    env = dict(base_env)
    env.update(
        MNIST_BASICS_E2E_HOME=str(root),
        TMPDIR=str(tmp),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{base_env.get('PATH', '')}",
    )
    env.pop("RAY_ADDRESS", None)
    local_only = dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    port, client_port = free_port(), free_port()
    common = [
        "--num-cpus=1",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
    ]
    cluster = RayCluster(
        f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", local_only, tmp, str(root), []
    )
    try:
        _ray(
            [
                "start",
                "--head",
                f"--port={port}",
                f"--ray-client-server-port={client_port}",
                "--include-dashboard=false",
                f"--temp-dir={root / 'ray'}",
                *common,
            ],
            local_only,
            cluster.sessions,
        )
        for _ in range(nodes - 1):
            _ray(
                ["start", f"--address={cluster.gcs}", "--node-ip-address=127.0.0.1", *common],
                env,
                cluster.sessions,
            )
        yield cluster
    finally:
        stop_cluster(cluster)
        shutil.rmtree(root, ignore_errors=True)


def stop_cluster(cluster: RayCluster, grace: float = 5) -> None:
    """SIGTERM every process of the cluster, SIGKILL what is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        for pid in cluster.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while cluster.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not cluster.processes():
            return
    raise AssertionError(f"ray processes outlived SIGKILL: {cluster.processes()}")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    from dvc_fixtures import _env

    yield from start_cluster(_env(tmp_path_factory.mktemp("ray-home")))
