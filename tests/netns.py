"""A throwaway network namespace for tests: create, enter, leave, delete.

Python 3.11 has no os.setns, so entering goes through libc's setns(2).
Only the network namespace changes: the mount namespace, and with it
/sys/fs/bpf, stays the test process's own.
"""
import contextlib
import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd, nstype=CLONE_NEWNET):
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def ip(*args, ns=None, check=True):
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class NetNs:
    """`ip netns add NAME`, removed again by delete() (also on failure)."""

    def __init__(self, name):
        self.name = name
        self.path = f"/run/netns/{name}"
        self._saved = None
        ip("netns", "add", name)

    def ip(self, *args, check=True):
        return ip(*args, ns=self.name, check=check)

    def sysctl(self, key, value):
        subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-qw", f"{key}={value}"],
                       check=True, capture_output=True)

    def enter(self):
        """Move this thread into the namespace; leave() comes back."""
        if self._saved is not None:
            return
        self._saved = os.open("/proc/self/ns/net", os.O_RDONLY)
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

    def delete(self):
        """Leave if inside, then delete the namespace (its links go with it)."""
        self.leave()
        ip("netns", "delete", self.name, check=False)
