"""Real storage servers on 127.0.0.1 for DVC remotes: S3 (moto), WebDAV (wsgidav), SSH (sshd).

Each fixture starts its server for the test module, with credentials made up for the run, and
stops it at teardown, failure or not. Nothing here mocks DVC or the client libraries: `dvc push`
and `dvc pull` talk to the servers over TCP as they would to AWS, a WebDAV share or a NAS.

- S3: moto's server mode in its own process, with IAM authentication switched on after the
  set-up calls (`INITIAL_NO_AUTH_ACTION_COUNT`), so only the key made here can read or write.
- WebDAV: wsgidav behind cheroot (as webdav4's and dvc-webdav's tests run it), basic auth.
- SSH: Debian's OpenSSH sshd on a free port, with its own host key, one authorized client key,
  no passwords; the client trusts exactly that host key (a known_hosts file in the test HOME).

Packages come from `pip install -e '.[remotes,test-remotes]'`; where one is missing the tests
skip with that command (and fail in CI, env CI=true, which must install them).
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(*modules: str, install: str) -> None:
    """Skip (fail in CI) unless every module can be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"needs {', '.join(missing)}: pip install -e '{install}'"
        if in_ci():
            pytest.fail(f"{msg} (CI must install it: .ci/run)")
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Remote:
    """One server, as a DVC remote: its URL, what goes in git and what stays out of it."""

    name: str
    url: str
    config: dict[str, str] = field(default_factory=dict)  # `dvc remote modify`: not secret
    local: dict[str, str] = field(default_factory=dict)  # `dvc remote modify --local`
    env: dict[str, str] = field(default_factory=dict)  # credentials from the environment
    secrets: tuple[str, ...] = ()  # strings that must never reach git
    root: Path | None = None  # where the server keeps the files, when on this disk
    known_host: str = ""  # SSH: the known_hosts line of the server's host key

    def add(self, proj, default: bool = True, local: bool = True) -> None:
        """`dvc remote add [-d]` + its settings; credentials only into .dvc/config.local."""
        proj.dvc("remote", "add", *(["-d"] if default else []), self.name, self.url)
        for k, v in self.config.items():
            proj.dvc("remote", "modify", self.name, k, v)
        if local:
            self.add_credentials(proj)

    def add_credentials(self, proj) -> None:
        """What each person does once in their own clone: .dvc/config.local, never committed."""
        for k, v in self.local.items():
            proj.dvc("remote", "modify", "--local", self.name, k, v)


# --- S3: moto server mode ----------------------------------------------------------------

S3_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


@pytest.fixture(scope="session")  # shared by the remotes and the experiments tests
def s3_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """moto's S3 in its own process on a free port; one IAM user's key may use the bucket.

    The first three calls (create user, its access key, its policy) run before authentication
    starts; every later request, DVC's included, must be signed with that key.
    """
    require("moto", "flask", "boto3", "dvc_s3", install=".[remotes,test-remotes]")
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(k, None)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        wait_for_port(port, proc, "moto server")
        endpoint = f"http://127.0.0.1:{port}"
        setup = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="dvc")
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        iam.put_user_policy(UserName="dvc", PolicyName="s3", PolicyDocument=json.dumps(S3_POLICY))
        setup.update(
            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
        )
        boto3.client("s3", **setup).create_bucket(Bucket="mnist")
        yield Remote(
            name="s3",
            url="s3://mnist/store",
            config={"endpointurl": endpoint},
            local={
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
            },
            env={
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            },
            secrets=(key["SecretAccessKey"],),
        )
    finally:
        stop(proc)


# --- WebDAV: wsgidav on cheroot ----------------------------------------------------------


@pytest.fixture(scope="module")
def webdav_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """wsgidav serving a temp folder over HTTP on a free port, basic auth, one user."""
    require("wsgidav", "cheroot", "dvc_webdav", install=".[remotes,test-remotes]")
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    root = tmp_path_factory.mktemp("webdav")
    (root / "store").mkdir()  # the share's folder, as its admin would make it
    user, password = "alice", secrets.token_hex(16)  # urlsafe may begin "-": an option to dvc
    app = WsgiDAVApp(
        {
            "host": "127.0.0.1",
            "port": 0,
            "provider_mapping": {"/": str(root)},
            "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
            "http_authenticator": {
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
                "trusted_auth_header": None,
            },
            "verbose": 0,
            "logging": {"enable": False},
            "property_manager": True,
            "lock_storage": True,
        }
    )
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=8)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        port = server.bind_addr[1]
        wait_for_port(port, None, "wsgidav")
        yield Remote(
            name="dav",
            url=f"webdav://127.0.0.1:{port}/store",
            config={},
            local={"user": user, "password": password},
            secrets=(password,),
            root=root / "store",
        )
    finally:
        server.stop()
        thread.join(10)


# --- SSH: Debian's OpenSSH sshd ----------------------------------------------------------


def keygen(path: Path) -> str:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "mnist-basics-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def ssh_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """sshd on a free port of 127.0.0.1, key authentication only, for the current user.

    Its host key, the client key and authorized_keys are made in a temp folder; the client's
    known_hosts (in the e2e HOME, see `trust_host`) holds exactly this host key.
    """
    require("dvc_ssh", "asyncssh", install=".[remotes]")
    if not SSHD.exists():
        msg = f"{SSHD} not found: apt-get install -y openssh-server"
        if in_ci():
            pytest.fail(f"{msg} (.ci/run must install it)")
        pytest.skip(msg)
    if os.geteuid() == 0:
        # As root, sshd wants its privilege-separation folder (Debian's service creates it).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    d = tmp_path_factory.mktemp("sshd")
    host_pub = keygen(d / "host_ed25519")
    client_pub = keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text(client_pub + "\n")
    (d / "authorized_keys").chmod(0o600)
    store = d / "store"
    store.mkdir()
    port = free_port()
    user = getpass.getuser()
    config = d / "sshd_config"
    config.write_text(
        f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_ed25519"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
"""
    )
    log = d / "sshd.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for_port(port, proc, f"sshd (log: {log.read_text(errors='replace')})")
        yield Remote(
            name="nas",
            url=f"ssh://{user}@127.0.0.1:{port}{store}",
            config={},
            local={"keyfile": str(d / "client_ed25519")},
            secrets=(),
            root=store,
            known_host=f"[127.0.0.1]:{port} {host_pub}",
        )
    finally:
        stop(proc)


def trust_host(env: dict[str, str], remote: Remote) -> None:
    """Write the sshd's host key to HOME/.ssh/known_hosts of the projects' environment."""
    line = remote.known_host
    if not line:
        return
    ssh = Path(env["HOME"]) / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    known = ssh / "known_hosts"
    lines = known.read_text().splitlines() if known.exists() else []
    if line not in lines:
        known.write_text("\n".join([*lines, line]) + "\n")
