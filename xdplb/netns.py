"""Network namespaces for the lab, the benchmark and the tests.

Commands run inside a namespace with `nsenter --net=/run/netns/NAME`, never
`ip -n` or `ip netns exec`: those also remount /sys (hiding /sys/fs/bpf) and
make / a slave mount, which fails where / is not a mount point (a chroot).
Python 3.11 has no os.setns, so entering from Python goes through libc.
"""
import contextlib
import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class NetnsError(Exception):
    """A namespace command failed; the message holds the command and its stderr."""


def setns(fd, nstype=CLONE_NEWNET):
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def path(name):
    return os.path.join(NETNS_DIR, name)


def in_ns(name, argv):
    """argv run inside namespace name."""
    return ["nsenter", f"--net={path(name)}", *argv]


def run(argv, check=True, timeout=60, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(argv, timeout=timeout, **kw)
    if check and r.returncode:
        err = (r.stderr or "").strip() if isinstance(r.stderr, str) else ""
        raise NetnsError(f"`{' '.join(argv)}` failed ({r.returncode}): {err}")
    return r


class NetNs:
    """`ip netns add NAME`; delete() removes it (and its links) again."""

    def __init__(self, name, create=True):
        self.name = name
        self.path = path(name)
        self._saved = None
        if create:
            self.create()

    def create(self):
        run(["ip", "netns", "add", self.name])

    def run(self, argv, check=True, **kw):
        return run(in_ns(self.name, argv), check=check, **kw)

    def ip(self, *args, check=True):
        return self.run(["ip", *args], check=check)

    def sysctl(self, *settings):
        self.run(["sysctl", "-qw", *settings])

    def enter(self):
        """Move the calling thread into the namespace; leave() comes back."""
        if self._saved is not None:
            return
        self._saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            setns(fd)
        except BaseException:
            os.close(self._saved)
            self._saved = None
            raise
        finally:
            os.close(fd)

    def leave(self):
        if self._saved is None:
            return
        try:
            setns(self._saved)
        finally:
            os.close(self._saved)
            self._saved = None

    @contextlib.contextmanager
    def entered(self):
        self.enter()
        try:
            yield self
        finally:
            self.leave()

    def exists(self):
        return os.path.exists(self.path)

    def delete(self):
        """Leave if inside, then delete the namespace (its links go with it)."""
        self.leave()
        if self.exists():
            run(["ip", "netns", "delete", self.name], check=False)
