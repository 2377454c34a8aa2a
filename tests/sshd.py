"""A real network boundary for tests: Debian's OpenSSH server on 127.0.0.1, a high port, its own
config and host key, key authentication only. It serves

- the desired-state repository over SSH, as Unix user `edgewave-git`: the controller's key may
  push, a site's key may only fetch (a forced command lets git-upload-pack through);
- the monitoring store over SFTP (`internal-sftp`, no shell): every store account is chrooted to
  the store (nothing of the host is there to read: not /etc/passwd, not sshd_config, not the Git
  repository or other accounts' keys). In it, a site's account can enter only its own prefix, to
  read and write (`<site>/`, mode 2770, its own); it cannot list the store's root (root-owned,
  0751) or enter another site's prefix or the control plane's `_drift/` and `_feedback/`. The
  control plane's account is in the store's group: it reads every prefix and writes its own.
  Store URLs are `sftp://<account>@127.0.0.1:<port>/` (the chroot's root is the store's).

Unix accounts are created once (idempotent) and left in place; everything else lives in one
folder under /var/lib/edgewave-test-sshd (root-owned all the way down, as sshd's ChrootDirectory
requires; traversable by those accounts, unlike pytest's 0700 temp folders) and goes away with
`stop()`. Needs root.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
GIT_USER = "edgewave-git"
CP_USER = "edgewave-cp"
GROUP = "edgewave-store"
ACCOUNT_HOME = "/var/tmp"
SERVERS = Path("/var/lib/edgewave-test-sshd")  # root-owned, 0755: a chroot's every component must be
CONTROL_PLANE_FOLDERS = ("_drift", "_feedback")  # what the control plane writes at the store's root
GIT_ACCESS = """#!/bin/sh
# forced command of every key of the desired-state account: only git's own transports,
# pushes only for keys given "rw"
case "$SSH_ORIGINAL_COMMAND" in
  "git-upload-pack "*) exec git-shell -c "$SSH_ORIGINAL_COMMAND" ;;
  "git-receive-pack "*) [ "$1" = rw ] && exec git-shell -c "$SSH_ORIGINAL_COMMAND" ;;
esac
echo "edgewave test sshd: '$SSH_ORIGINAL_COMMAND' is not allowed for this key" >&2
exit 1
"""


class SshUnavailable(RuntimeError):
    """The SSH server cannot run here; says why."""


def site_user(site: str) -> str:
    return f"ew-{site}"[:32]


@dataclass(frozen=True)
class Identity:
    user: str
    key: Path  # private key file (0600)

    @property
    def private_key(self) -> str:
        return self.key.read_text()


@dataclass
class SshServer:
    base: Path
    port: int
    process: subprocess.Popen
    known_hosts: Path
    sites: dict[str, Identity] = field(default_factory=dict)
    controller: Identity | None = None

    @property
    def store_root(self) -> Path:
        return self.base / "store"

    @property
    def repo(self) -> Path:
        return self.base / "git" / "desired-state.git"

    def git_url(self) -> str:
        return f"ssh://{GIT_USER}@127.0.0.1:{self.port}{self.repo}"

    def store_url(self, identity: Identity) -> str:
        return f"sftp://{identity.user}@127.0.0.1:{self.port}/"  # chrooted: the store is the account's /

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)
        shutil.rmtree(self.base, ignore_errors=True)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def _account(user: str, shell: str, in_group: bool) -> None:
    """A Unix account sshd accepts keys for (password field '*': no password, not locked), made once.
    Its home is /var/tmp for every server: the URLs name absolute paths, and an account shared by two
    servers at once (make test's two lanes) must not be changed under a live session (usermod
    refuses, exit 8, while a process runs as the user)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        _run("useradd", "--system", "--no-create-home", "--home-dir", ACCOUNT_HOME, "--shell", shell,
             "--password", "*", *(["--groups", GROUP] if in_group else []), user)
        return
    if (entry.pw_dir, entry.pw_shell) != (ACCOUNT_HOME, shell):  # an account made by an earlier version
        _run("usermod", "--home", ACCOUNT_HOME, "--shell", shell, "--password", "*", user)


def _keypair(folder: Path, name: str) -> Path:
    key = folder / name
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
    return key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(sites: list[str], keys_from: SshServer | None = None, max_startups: str | None = None) -> SshServer:
    """Start the server with an account and key per site and one for the control plane. `keys_from`:
    the sites keep the keys they have on that server (a Git host and a store, one identity per site).
    `max_startups`: sshd's MaxStartups (`start:rate:full`; its default 10:30:100 drops new connections at
    random once ten are unauthenticated: a Git host that hundreds of sites reach raises it)."""
    if not SSHD.exists() or shutil.which("git-shell") is None:
        raise SshUnavailable("Debian's openssh-server is not installed (scripts/setup-system.sh installs it)")
    if os.geteuid() != 0:
        raise SshUnavailable("the test SSH server creates Unix accounts per site: it needs root")
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        _run("groupadd", "--system", GROUP)
    SERVERS.mkdir(mode=0o755, exist_ok=True)
    os.chown(SERVERS, 0, 0)
    os.chmod(SERVERS, 0o755)
    base = Path(tempfile.mkdtemp(prefix="edgewave-sshd-", dir=SERVERS))
    os.chmod(base, 0o755)
    keys, auth = base / "keys", base / "authorized_keys"
    for folder in (keys, auth, base / "git", base / "store"):
        folder.mkdir()
    os.chmod(keys, 0o700)
    host_key = _keypair(keys, "host_ed25519")
    access = base / "git-access"
    access.write_text(GIT_ACCESS)
    os.chmod(access, 0o755)

    _account(GIT_USER, "/bin/sh", in_group=False)
    _account(CP_USER, "/usr/sbin/nologin", in_group=True)
    controller = Identity(CP_USER, _keypair(keys, "controller"))
    identities = {site: Identity(site_user(site), keys_from.sites[site].key if keys_from else _keypair(keys, site))
                  for site in sites}
    for identity in identities.values():
        _account(identity.user, "/usr/sbin/nologin", in_group=False)

    git_keys = [f'command="{access} rw",restrict {Path(str(controller.key) + ".pub").read_text().strip()}']
    git_keys += [f'command="{access} ro",restrict {Path(str(i.key) + ".pub").read_text().strip()}'
                 for i in identities.values()]
    (auth / GIT_USER).write_text("\n".join(git_keys) + "\n")
    (auth / CP_USER).write_text(Path(str(controller.key) + ".pub").read_text())
    for identity in identities.values():
        (auth / identity.user).write_text(Path(str(identity.key) + ".pub").read_text())

    repo = base / "git" / "desired-state.git"
    _run("git", "init", "--quiet", "--bare", "--initial-branch", "main", str(repo))
    _run("chown", "-R", f"{GIT_USER}:{GIT_USER}", str(base / "git"))
    store = base / "store"
    _run("chown", f"root:{GROUP}", str(store))
    os.chmod(store, 0o751)  # the chroot: root's; the control plane (group) lists it, sites only pass through
    for name in CONTROL_PLANE_FOLDERS:
        folder = store / name
        folder.mkdir()
        _run("chown", f"{CP_USER}:{GROUP}", str(folder))
        os.chmod(folder, 0o2770)
    for site, identity in identities.items():
        folder = store / site
        folder.mkdir()
        _run("chown", f"{identity.user}:{GROUP}", str(folder))
        os.chmod(folder, 0o2770)  # the site reads and writes; the control plane (group) reads and tidies; no one else

    port = _free_port()
    config = base / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {base / "sshd.pid"}
AuthorizedKeysFile {auth}/%u
AllowUsers {GIT_USER} {CP_USER} {" ".join(i.user for i in identities.values())}
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PrintMotd no
LogLevel VERBOSE
{f"MaxStartups {max_startups}" if max_startups else ""}
Subsystem sftp internal-sftp
Match User {CP_USER},{",".join(i.user for i in identities.values())}
    ChrootDirectory {store}
    ForceCommand internal-sftp
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = base / "sshd.log"
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SshUnavailable(f"sshd did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    known_hosts = base / "known_hosts"
    host_pub = Path(str(host_key) + ".pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    os.chmod(known_hosts, 0o644)
    return SshServer(base, port, process, known_hosts, identities, controller)


@contextmanager
def running(sites: list[str]) -> Iterator[SshServer]:
    """The server for a test module; the module is skipped, saying why, where it cannot run."""
    import pytest

    try:
        server = start(sites)
    except SshUnavailable as exc:
        pytest.skip(f"no SSH server can run here: {exc}")
    try:
        yield server
    finally:
        server.stop()
