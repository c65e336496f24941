"""Where xdplb's state lives: pinned objects in bpffs, one folder per netns.

IPVS keeps its tables in the kernel, per network namespace; so does xdplb.
The folder is <bpffs>/xdplb/net<inode of the netns>. `ip netns exec` remounts
/sys, which hides /sys/fs/bpf, so /sys/fs/bpf is also bind-mounted at
/run/xdplb/bpffs: the same bpffs instance, visible from `ip netns exec` too.
XDPLB_PIN_DIR overrides the folder (tests use it to keep their state apart).
"""
import contextlib
import fcntl
import glob
import os
import shutil
import subprocess

from . import bpfsys, maps

SYS_BPFFS = "/sys/fs/bpf"
RUN_BPFFS = "/run/xdplb/bpffs"
LOCK_DIR = "/run/xdplb"
PROG_PIN = "prog"


class StateError(Exception):
    """xdplb's pinned state is missing or unusable; the message says why."""


def _bpffs_mounts():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "bpf":
                yield pre.split()[4]


def bpffs_root(create=False):
    """The bpffs to pin in; with create, mount it (and its /run alias) if needed."""
    mounted = set(_bpffs_mounts())
    if SYS_BPFFS in mounted:
        if RUN_BPFFS not in mounted and create:
            os.makedirs(RUN_BPFFS, mode=0o700, exist_ok=True)
            subprocess.run(["mount", "--bind", SYS_BPFFS, RUN_BPFFS], check=False,
                           stderr=subprocess.DEVNULL)
        return SYS_BPFFS
    if RUN_BPFFS in mounted:
        return RUN_BPFFS
    if not create:
        raise StateError("no bpffs is mounted (mount -t bpf bpf /sys/fs/bpf)")
    if os.path.isdir(SYS_BPFFS) and subprocess.run(
            ["mount", "-t", "bpf", "bpf", SYS_BPFFS], stderr=subprocess.DEVNULL).returncode == 0:
        return bpffs_root(create=True)
    raise StateError(f"cannot mount bpffs on {SYS_BPFFS}: are you root?")


def netns_id():
    return os.stat("/proc/self/ns/net").st_ino


def pin_dir(create=False):
    """The state folder of the current network namespace."""
    override = os.environ.get("XDPLB_PIN_DIR")
    if override:
        return override
    return os.path.join(bpffs_root(create), "xdplb", f"net{netns_id()}")


def lock_path(folder):
    return os.path.join(LOCK_DIR, folder.strip("/").replace("/", "_") + ".lock")


@contextlib.contextmanager
def locked(folder):
    """Serialise writers of one state folder (an flock on a file in /run)."""
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class State:
    """The open pinned maps (and program) of one xdplb instance."""

    def __init__(self, folder):
        self.folder = folder
        for name in maps.MAPS:
            setattr(self, name, maps.open_map(folder, name))
        self.conn_table = maps.ConnTable(self.conns, self.conns_assured)
        self.prog_fd = bpfsys.obj_get(os.path.join(folder, PROG_PIN))

    @classmethod
    def open(cls, create=False, folder=None):
        """Open the state of this netns; with create, compile and pin it if absent."""
        folder = folder or pin_dir(create)
        if not os.path.exists(os.path.join(folder, PROG_PIN)):
            if not create:
                raise StateError(f"xdplb has no state in {folder}")
            from . import loader  # compiling needs bcc; listing does not
            loader.create_state(folder)
        return cls(folder)

    def prog_id(self):
        return bpfsys.obj_info(self.prog_fd, bpfsys.BpfProgInfo).id

    def close(self):
        for name in maps.MAPS:
            getattr(self, name).close()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def remove(folder):
    """Unpin everything in a state folder (the kernel frees unreferenced objects),
    with its lock file and any folder a create left half-made."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    for tmp in glob.glob(glob.escape(folder) + "_tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(folder))
    parent = os.path.dirname(folder)
    with contextlib.suppress(OSError):
        os.rmdir(parent)  # only if no other netns has state


@contextlib.contextmanager
def private_folder(name):
    """A state folder of its own, <bpffs>/xdplb/<name>, for tests and
    benchmarks; removed on exit, whatever happened."""
    folder = os.path.join(bpffs_root(create=True), "xdplb", name)
    try:
        yield folder
    finally:
        remove(folder)
