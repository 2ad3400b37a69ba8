"""A disk of its own for a coordinator, small enough to fill: the disk-full fault.

A tmpfs of ``size`` bytes is mounted over the run folder in a private mount namespace
(``unshare``; a user who is not root gets a user namespace that maps them to root, so no
privilege is needed where the kernel allows unprivileged user namespaces). A sleeping
*holder* process keeps the namespace alive between the runs of a script; the runs are
started inside it (:meth:`SmallDisk.command`, through ``nsenter``) and the test reads and
writes the small disk through ``/proc/<holder>/root``. Folders named in ``keep`` are
bind-mounted from the real disk (the sites' private state: in a deployment each site has a
disk of its own), so that only the coordinator's files are on the small disk. Filling the
disk makes every write to it fail with the kernel's ``ENOSPC`` part-way through, exactly as
a full disk does.
"""
from __future__ import annotations

import errno
import os
import select
import shlex
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

#: Name of the file that fills the disk.
FILLER = "disk-filler"


class SmallDisk:
    """A ``size``-byte filesystem mounted at ``mount`` for the processes started through it.

    Parameters
    ----------
    mount : Path
        The folder it is mounted over (created if missing; what it holds on the real disk
        is hidden from those processes).
    size : int
        Bytes.
    keep : Mapping
        Sub-folder name -> a real folder bind-mounted there (stays on the real disk).
    """

    def __init__(self, mount: Path, size: int, keep: Mapping[str, Path] | None = None) -> None:
        self.mount, self.size, self.keep = Path(mount).resolve(), int(size), dict(keep or {})
        self.holder: subprocess.Popen[bytes] | None = None
        self.rootless = os.geteuid() != 0

    def _setup(self) -> str:
        lines = ["set -e", f"mount -t tmpfs -o size={self.size} fedmpdrm-small-disk {shlex.quote(str(self.mount))}"]
        for name, real in self.keep.items():
            inner = shlex.quote(str(self.mount / name))
            lines += [f"mkdir -p {inner}", f"mount --bind {shlex.quote(str(Path(real).resolve()))} {inner}"]
        return "\n".join([*lines, "echo ready", "exec sleep 86400"])

    def start(self, timeout: float = 30.0) -> None:
        """Create the namespace and mount the disk.

        Raises
        ------
        RuntimeError
            ``unshare`` could not create the namespace or mount (its message included).
        """
        self.mount.mkdir(parents=True, exist_ok=True)
        for real in self.keep.values():
            Path(real).mkdir(parents=True, exist_ok=True)
        ns = ["--user", "--map-root-user", "--mount"] if self.rootless else ["--mount"]
        self.holder = subprocess.Popen(["unshare", *ns, "--propagation", "private", "sh", "-c", self._setup()],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        ready, _, _ = select.select([self.holder.stdout], [], [], timeout)
        line = self.holder.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.close()
            err = self.holder.stderr.read().decode(errors="replace") if self.holder.stderr else ""
            raise RuntimeError(f"could not mount a {self.size}-byte tmpfs at {self.mount} in a private mount "
                               f"namespace ({'unprivileged ' if self.rootless else ''}unshare): {err.strip()}")

    def command(self, argv: list[str], cwd: Path) -> list[str]:
        """``argv`` run inside the namespace, in folder ``cwd``."""
        assert self.holder is not None, "start() first"
        ns = ["--user", "--preserve-credentials", "--mount"] if self.rootless else ["--mount"]
        enter = 'cd "$0" && exec "$@"'  # a folder is looked up again inside the namespace
        return ["nsenter", f"--target={self.holder.pid}", *ns, "--", "sh", "-c", enter, str(Path(cwd).resolve()), *argv]

    def outside(self, path: Path) -> Path:
        """Where this test process finds ``path`` as the namespace sees it."""
        assert self.holder is not None, "start() first"
        return Path(f"/proc/{self.holder.pid}/root") / Path(path).resolve().relative_to("/")

    def fill(self) -> int:
        """Fill the disk to the last byte; returns the bytes written."""
        fd = os.open(self.outside(self.mount / FILLER), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        written, chunk = 0, b"\0" * 2**20
        try:
            while True:
                written += os.write(fd, chunk)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Delete the file that filled the disk."""
        self.outside(self.mount / FILLER).unlink(missing_ok=True)

    def close(self) -> None:
        """End the namespace (its disk goes with it once no process of the namespace runs)."""
        if self.holder is not None and self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(timeout=30)
