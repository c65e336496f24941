"""Where xdplb's state lives: pinned objects in bpffs, one folder per netns.

IPVS keeps its tables in the kernel, per network namespace; so does xdplb.
The folder is <bpffs>/xdplb/net<inode of the netns>. `ip netns exec` remounts
/sys, which hides /sys/fs/bpf, so /sys/fs/bpf is also bind-mounted at
/run/xdplb/bpffs: the same bpffs instance, visible from `ip netns exec` too.
XDPLB_PIN_DIR overrides the folder (tests use it to keep their state apart).
"""
import contextlib
import fcntl
import os
import re
import shutil

from . import bpfsys, fault, maps
from .structs import XDPLB_LAYOUT_VERSION

SYS_BPFFS = "/sys/fs/bpf"
RUN_BPFFS = "/run/xdplb/bpffs"
LOCK_DIR = "/run/xdplb"
PROG_PIN = "prog"
# While a replace (xdplb/loader.py) swaps interfaces to a new program, the one
# it replaces and that program's prog array stay pinned under these names.
PREV_PINS = {"prog": "prog_prev", "new_conn": "new_conn_prev"}


class StateError(Exception):
    """xdplb's pinned state is missing or unusable; the message says why."""


class BadPinDir(StateError):
    """XDPLB_PIN_DIR names no usable state folder (an error, never "no state")."""


def private_dir(path):
    """mkdir -p path, each folder it creates 0700 whatever the umask; an
    existing folder of ours that others may read or enter is made 0700 too
    (not a mount point: that would change the mounted file system's root)."""
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        os.chmod(d, 0o700)
    st = os.lstat(path)
    if st.st_uid == os.geteuid() and st.st_mode & 0o077 and not missing \
            and not os.path.ismount(path):
        os.chmod(path, 0o700)
    return path


def _mounts():
    """(mount point, fs type) of every mount of this mount namespace, in order."""
    def unescape(s):  # mountinfo writes space, tab, newline and backslash as \ooo
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post:
                yield unescape(pre.split()[4]), post.split()[0]


def check_pin_dir(path):
    """The folder XDPLB_PIN_DIR names, checked before anything uses it: an
    absolute, normal path (no '.', '..', empty or dotted names: bpffs refuses
    dots), no symbolic link on the way, strictly inside a mounted bpffs (not
    its root: `xdplb detach` removes the whole folder)."""
    what = f"XDPLB_PIN_DIR={path!r}"
    if not path.startswith("/"):
        raise BadPinDir(f"{what} is not an absolute path")
    parts = path.rstrip("/").split("/")[1:]
    if any(c < " " or c == "\x7f" for c in path):
        raise BadPinDir(f"{what} contains control characters")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise BadPinDir(f"{what} must be a normal absolute path (no '.', '..' or '//')")
    norm = "/" + "/".join(parts)
    if os.path.realpath(norm) != norm:
        raise BadPinDir(f"{what} goes through a symbolic link ({os.path.realpath(norm)})")
    best, fstype = "/", None
    for mnt, fs in _mounts():
        if (norm == mnt or norm.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, fs
    if fstype != "bpf":
        raise BadPinDir(f"{what} is not inside a mounted bpffs ({norm} is on {best}, "
                        f"a {fstype} file system)")
    if norm == best:
        raise BadPinDir(f"{what} is the root of a bpffs: name a folder inside it")
    if "." in norm[len(best):]:
        raise BadPinDir(f"{what}: bpffs names cannot contain dots")
    return norm


def check_private(folder):
    """Refuse a state folder others could tamper with: the folder and every
    folder between it and its bpffs root must belong to root (or to us) and
    be writable by nobody else."""
    roots = [m for m, fs in _mounts() if fs == "bpf"]
    d = folder
    while d not in roots and d != "/":
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            d = os.path.dirname(d)
            continue
        if st.st_uid not in (0, os.geteuid()):
            raise StateError(f"refusing {folder}: {d} belongs to uid {st.st_uid}, not root")
        if st.st_mode & 0o022:
            raise StateError(f"refusing {folder}: {d} is writable by others "
                             f"(mode {st.st_mode & 0o7777:04o})")
        d = os.path.dirname(d)


def _bpffs_mounts():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "bpf":
                yield pre.split()[4]


def bpffs_root(create=False):
    """The bpffs to pin in; with create, mount it (and its /run alias) if needed."""
    import subprocess   # (only a host's first state mounts: every command starts faster)
    mounted = set(_bpffs_mounts())
    if SYS_BPFFS in mounted:
        if RUN_BPFFS not in mounted and create:
            private_dir(LOCK_DIR)
            private_dir(RUN_BPFFS)
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
        return check_pin_dir(override)
    return os.path.join(bpffs_root(create), "xdplb", f"net{netns_id()}")


def lock_path(folder):
    return os.path.join(LOCK_DIR, folder.strip("/").replace("/", "_") + ".lock")


def journal_path(folder):
    """The redo journal of an interrupted configuration change (xdplb/journal.py)."""
    return lock_path(folder)[:-len(".lock")] + ".journal"


def estimates_path(folder):
    """The rate estimates and retired totals of `xdplb daemon` (xdplb/estimator.py)."""
    return lock_path(folder)[:-len(".lock")] + ".est"


def leftovers(path, infix):
    """The paths `<path><infix>...` beside path: what a writer killed before
    its rename left (temporary folders and files)."""
    folder, name = os.path.split(path)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [os.path.join(folder, n) for n in names if n.startswith(name + infix)]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def reap(folder):
    """Remove the folders `<folder>_tmp<pid>` that creators killed before their
    rename left behind (full of pins: the maps stay allocated while pinned).
    Only those of dead processes: a live one may be pinning right now."""
    for tmp in leftovers(folder, "_tmp"):
        pid = tmp[len(folder) + len("_tmp"):]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(folder):
    """Serialise writers of one state folder (an flock on a file in /run)."""
    private_dir(LOCK_DIR)
    fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class IncompatibleState(StateError):
    """The state folder was pinned by a version of xdplb with another map layout."""

    def __init__(self, folder, why):
        super().__init__(f"state {folder} was created by an incompatible xdplb ({why}); "
                         f"run `xdplb detach` to remove it")


class State:
    """The open pinned maps (and program) of one xdplb instance."""

    def __init__(self, folder, readonly=False):
        self.folder = folder
        self.readonly = readonly
        self.prog_fd = -1
        opened = []
        try:
            for name in maps.MAPS:
                try:
                    m = maps.open_map(folder, name, readonly=readonly)
                except FileNotFoundError:
                    raise IncompatibleState(folder, f"it has no {name} map") from None
                except maps.LayoutError as e:
                    raise IncompatibleState(folder, str(e)) from None
                opened.append(m)
                setattr(self, name, m)
            version = self.layout.get(0).value
            if version != XDPLB_LAYOUT_VERSION:
                raise IncompatibleState(folder, f"pin layout {version}, this xdplb uses "
                                        f"{XDPLB_LAYOUT_VERSION}")
            # read-only: no program fd either (BPF_PROG_TEST_RUN through it writes maps)
            if not readonly:
                self.prog_fd = bpfsys.obj_get(os.path.join(folder, PROG_PIN))
        except BaseException:
            for m in opened:
                m.close()
            raise
        self.conn_table = maps.ConnTable(self.conns, self.conns_assured)
        self.conn_table6 = maps.ConnTable(self.conns6, self.conns6_assured)

    @classmethod
    def open(cls, folder=None, readonly=False):
        """Open the state of this netns (xdplb/loader.py creates one).
        readonly: every map fd is BPF_F_RDONLY (the kernel refuses writes)."""
        folder = folder or pin_dir()
        if not readonly:  # a read-only open (the exporter) removes nothing either
            reap(folder)
        if not os.path.exists(os.path.join(folder, PROG_PIN)):
            raise StateError(f"xdplb has no state in {folder}")
        check_private(folder)
        return cls(folder, readonly=readonly)

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
    with its lock file, journal, estimates and any folder a create left half-made. The
    program pin goes first: a folder without it is never opened as a state,
    so an interrupted removal leaves a folder the next create replaces."""
    if os.path.isdir(folder):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, PROG_PIN))
        fault.point("remove")
        shutil.rmtree(folder)
    for tmp in leftovers(folder, "_tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    jpath, epath = journal_path(folder), estimates_path(folder)
    for path in (jpath, *leftovers(jpath, ".tmp"), epath, *leftovers(epath, ".tmp"),
                 lock_path(folder)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
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
