"""Thin ctypes binding of the libbpf.so.1 calls xdplb needs.

The pinned state outlives every process, so the control plane talks to maps
and programs by file descriptor, through libbpf, without bcc.
"""
import collections
import ctypes as C
import errno
import os

_lib = C.CDLL("libbpf.so.1", use_errno=True)

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = range(5)

for _name, _args in {
    "bpf_obj_get": [C.c_char_p],
    "bpf_obj_pin": [C.c_int, C.c_char_p],
    "bpf_map_lookup_elem": [C.c_int, C.c_void_p, C.c_void_p],
    "bpf_map_update_elem": [C.c_int, C.c_void_p, C.c_void_p, C.c_uint64],
    "bpf_map_delete_elem": [C.c_int, C.c_void_p],
    "bpf_map_get_next_key": [C.c_int, C.c_void_p, C.c_void_p],
    "bpf_obj_get_info_by_fd": [C.c_int, C.c_void_p, C.POINTER(C.c_uint32)],
    "bpf_xdp_attach": [C.c_int, C.c_int, C.c_uint32, C.c_void_p],
    "bpf_xdp_detach": [C.c_int, C.c_uint32, C.c_void_p],
    "bpf_xdp_query_id": [C.c_int, C.c_int, C.POINTER(C.c_uint32)],
    "bpf_prog_test_run_opts": [C.c_int, C.c_void_p],
    "bpf_prog_get_fd_by_id": [C.c_uint32],
    "bpf_map_lookup_batch": [C.c_int, C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p,
                             C.POINTER(C.c_uint32), C.c_void_p],
    "bpf_map_update_batch": [C.c_int, C.c_void_p, C.c_void_p, C.POINTER(C.c_uint32),
                             C.c_void_p],
    "bpf_prog_load": [C.c_int, C.c_char_p, C.c_char_p, C.c_void_p, C.c_size_t, C.c_void_p],
}.items():
    getattr(_lib, _name).argtypes = _args
    getattr(_lib, _name).restype = C.c_int


def _check(ret, what):
    """libbpf 1.x returns -errno; older calls return -1 and set errno."""
    if ret < 0:
        err = -ret if ret != -1 else (C.get_errno() or errno.EPERM)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


BPF_F_RDONLY = 1 << 3  # file_flags of BPF_OBJ_GET: the fd can read the map, never write it


class BpfObjGetOpts(C.Structure):
    _fields_ = [("sz", C.c_size_t), ("file_flags", C.c_uint32), ("path_fd", C.c_int)]


_lib.bpf_obj_get_opts.argtypes = [C.c_char_p, C.POINTER(BpfObjGetOpts)]
_lib.bpf_obj_get_opts.restype = C.c_int


def obj_get(path, readonly=False):
    """fd of a pinned object; readonly: a map fd the kernel refuses every
    update and delete through (EPERM), whatever the caller does with it."""
    if readonly:
        opts = BpfObjGetOpts(C.sizeof(BpfObjGetOpts), BPF_F_RDONLY, 0)
        return _check(_lib.bpf_obj_get_opts(os.fsencode(path), C.byref(opts)),
                      f"open pinned object {path} read-only")
    return _check(_lib.bpf_obj_get(os.fsencode(path)), f"open pinned object {path}")


def obj_pin(fd, path):
    _check(_lib.bpf_obj_pin(fd, os.fsencode(path)), f"pin {path}")


def lookup(fd, key, value):
    """Fill value from key; False if the key is absent."""
    ret = _lib.bpf_map_lookup_elem(fd, C.byref(key), C.byref(value))
    if ret < 0 and C.get_errno() == errno.ENOENT or ret == -errno.ENOENT:
        return False
    _check(ret, "map lookup")
    return True


def update(fd, key, value, flags=BPF_ANY):
    _check(_lib.bpf_map_update_elem(fd, C.byref(key), C.byref(value), flags), "map update")


def delete(fd, key):
    ret = _lib.bpf_map_delete_elem(fd, C.byref(key))
    if ret < 0 and (ret == -errno.ENOENT or C.get_errno() == errno.ENOENT):
        return False
    _check(ret, "map delete")
    return True


def next_key(fd, key, out):
    """Store the key after key (or the first if key is None) in out; False at the end."""
    ret = _lib.bpf_map_get_next_key(fd, C.byref(key) if key is not None else None, C.byref(out))
    if ret < 0 and (ret == -errno.ENOENT or C.get_errno() == errno.ENOENT):
        return False
    _check(ret, "map iteration")
    return True


ENOTSUPP = 524  # the kernel's internal "no batch ops for this map type"


def lookup_batch(fd, in_batch, out_batch, keys, values, count):
    """BPF_MAP_LOOKUP_BATCH. Returns (entries read, more follow); raises
    NotImplementedError where the map type has no batch operations."""
    n = C.c_uint32(count)
    ret = _lib.bpf_map_lookup_batch(fd, in_batch, out_batch, keys, values, C.byref(n), None)
    err = -ret if ret < -1 else (C.get_errno() if ret == -1 else 0)
    if err == errno.ENOENT:
        return n.value, False
    if err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP) and in_batch is None:
        raise NotImplementedError
    if err:
        raise OSError(err, f"map batch lookup: {os.strerror(err)}")
    return n.value, True


class BpfMapBatchOpts(C.Structure):
    _fields_ = [("sz", C.c_size_t), ("elem_flags", C.c_uint64), ("flags", C.c_uint64)]


def update_batch(fd, keys, values, count, flags=BPF_ANY):
    """BPF_MAP_UPDATE_BATCH of count packed keys and values (bytes); returns
    the entries written. NotImplementedError where the map type has no batch
    operations (nothing has been written then)."""
    n = C.c_uint32(count)
    opts = BpfMapBatchOpts(C.sizeof(BpfMapBatchOpts), flags, 0)
    ret = _lib.bpf_map_update_batch(fd, keys, values, C.byref(n), C.byref(opts))
    err = -ret if ret < -1 else (C.get_errno() if ret == -1 else 0)
    if err in (errno.EOPNOTSUPP, ENOTSUPP, errno.EINVAL) and n.value == 0:
        raise NotImplementedError   # (a real EINVAL shows again, one update at a time)
    if err:
        raise OSError(err, f"map batch update: {os.strerror(err)}")
    return n.value


class BpfMapInfo(C.Structure):
    _fields_ = [("type", C.c_uint32), ("id", C.c_uint32), ("key_size", C.c_uint32),
                ("value_size", C.c_uint32), ("max_entries", C.c_uint32),
                ("map_flags", C.c_uint32), ("name", C.c_char * 16)]


class BpfProgInfo(C.Structure):
    """struct bpf_prog_info (uapi/linux/bpf.h) up to attach_btf_id; an older
    kernel fills what it knows and leaves the rest zero."""
    _fields_ = [("type", C.c_uint32), ("id", C.c_uint32), ("tag", C.c_uint8 * 8),
                ("jited_prog_len", C.c_uint32), ("xlated_prog_len", C.c_uint32),
                ("jited_prog_insns", C.c_uint64), ("xlated_prog_insns", C.c_uint64),
                ("load_time", C.c_uint64), ("created_by_uid", C.c_uint32),
                ("nr_map_ids", C.c_uint32), ("map_ids", C.c_uint64), ("name", C.c_char * 16),
                ("ifindex", C.c_uint32), ("gpl_compatible", C.c_uint32),
                ("netns_dev", C.c_uint64), ("netns_ino", C.c_uint64),
                ("nr_jited_ksyms", C.c_uint32), ("nr_jited_func_lens", C.c_uint32),
                ("jited_ksyms", C.c_uint64), ("jited_func_lens", C.c_uint64),
                ("btf_id", C.c_uint32), ("func_info_rec_size", C.c_uint32),
                ("func_info", C.c_uint64), ("nr_func_info", C.c_uint32),
                ("nr_line_info", C.c_uint32), ("line_info", C.c_uint64),
                ("jited_line_info", C.c_uint64), ("nr_jited_line_info", C.c_uint32),
                ("line_info_rec_size", C.c_uint32), ("jited_line_info_rec_size", C.c_uint32),
                ("nr_prog_tags", C.c_uint32), ("prog_tags", C.c_uint64),
                ("run_time_ns", C.c_uint64), ("run_cnt", C.c_uint64),
                ("recursion_misses", C.c_uint64), ("verified_insns", C.c_uint32),
                ("attach_btf_obj_id", C.c_uint32), ("attach_btf_id", C.c_uint32)]


def obj_info(fd, info_cls):
    info = info_cls()
    size = C.c_uint32(C.sizeof(info))
    _check(_lib.bpf_obj_get_info_by_fd(fd, C.byref(info), C.byref(size)), "object info")
    return info


BPF_PROG_TYPE_XDP = 6
# r0 = XDP_PASS; exit
XDP_PASS_INSNS = bytes.fromhex("b700000002000000" "9500000000000000")


def xdp_pass_prog():
    """An fd of a new XDP program that passes every frame (the caller closes it)."""
    insns = C.create_string_buffer(XDP_PASS_INSNS, len(XDP_PASS_INSNS))
    return _check(_lib.bpf_prog_load(BPF_PROG_TYPE_XDP, b"xdplb_pass", b"GPL", insns,
                                     len(XDP_PASS_INSNS) // 8, None), "load an XDP_PASS program")


def xdp_attach(ifindex, prog_fd, flags):
    _check(_lib.bpf_xdp_attach(ifindex, prog_fd, flags, None), f"attach XDP to ifindex {ifindex}")


def xdp_detach(ifindex, flags=0):
    _check(_lib.bpf_xdp_detach(ifindex, flags, None), f"detach XDP from ifindex {ifindex}")


def prog_by_id(prog_id):
    """An fd of the loaded program prog_id (the caller closes it)."""
    return _check(_lib.bpf_prog_get_fd_by_id(prog_id), f"program id {prog_id}")


def xdp_query_id(ifindex, flags=0):
    """Id of the XDP program attached to ifindex in the given mode (0 = none)."""
    out = C.c_uint32(0)
    _check(_lib.bpf_xdp_query_id(ifindex, flags, C.byref(out)), f"query XDP on ifindex {ifindex}")
    return out.value


class BpfTestRunOpts(C.Structure):
    _fields_ = [("sz", C.c_size_t), ("data_in", C.c_void_p), ("data_out", C.c_void_p),
                ("data_size_in", C.c_uint32), ("data_size_out", C.c_uint32),
                ("ctx_in", C.c_void_p), ("ctx_out", C.c_void_p),
                ("ctx_size_in", C.c_uint32), ("ctx_size_out", C.c_uint32),
                ("retval", C.c_uint32), ("repeat", C.c_int), ("duration", C.c_uint32),
                ("flags", C.c_uint32), ("cpu", C.c_uint32), ("batch_size", C.c_uint32)]


class XdpMd(C.Structure):
    _fields_ = [("data", C.c_uint32), ("data_end", C.c_uint32), ("data_meta", C.c_uint32),
                ("ingress_ifindex", C.c_uint32), ("rx_queue_index", C.c_uint32),
                ("egress_ifindex", C.c_uint32)]


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1

TestRun = collections.namedtuple("TestRun", "verdict data duration")
TestRun.__doc__ = """One BPF_PROG_TEST_RUN: the program's return value (the XDP verdict),
the frame it left (empty with live frames), and the kernel's ns per run."""


class ProgTestRun:
    """BPF_PROG_TEST_RUN of one XDP program: the project's only caller of
    the syscall (tests, fuzzer, benchmark). Buffers and options are set up
    once and grown or redone only when a call needs it: the fuzzer runs 10^6
    frames, and ctypes set-up per call costs more than the run itself."""

    HEADROOM = 512  # room for a program that grows the frame

    def __init__(self, prog_fd, size=4096):
        self.prog_fd = prog_fd
        self._ctx = XdpMd()
        self._opts = BpfTestRunOpts(sz=C.sizeof(BpfTestRunOpts))
        self._opts_ref = C.byref(self._opts)
        self._alloc(size)

    def _alloc(self, size):
        self._size = size
        self._in = C.create_string_buffer(size)
        self._out_len = size + self.HEADROOM
        self._out = C.create_string_buffer(self._out_len)
        self._shape = None

    def _setup(self, live_frames, ctx):
        o = self._opts
        o.data_in, o.ctx_in, o.ctx_size_in = C.addressof(self._in), C.addressof(ctx), C.sizeof(ctx)
        o.flags = BPF_F_TEST_XDP_LIVE_FRAMES if live_frames else 0
        # Live frames take no output buffers (the kernel refuses them).
        o.data_out = None if live_frames else C.addressof(self._out)
        o.ctx_out = None if live_frames or ctx is self._ctx else C.addressof(ctx)
        o.ctx_size_out = 0 if o.ctx_out is None else C.sizeof(ctx)
        self._shape = (live_frames, ctx)

    def run(self, data, ingress_ifindex=0, repeat=1, live_frames=False, batch_size=0,
            ctx=None):
        """Run the program repeat times on the frame data.

        ingress_ifindex: the device (of the calling thread's netns) the frame
        arrives on (0: loopback). ctx: an XdpMd to pass instead, which the
        kernel overwrites with the context after the run. live_frames:
        BPF_F_TEST_XDP_LIVE_FRAMES, the verdicts are acted on for real (TX
        and REDIRECT reach devices) in batches of batch_size (0: the
        kernel's 64); nothing comes back but the duration."""
        n = len(data)
        if n > self._size:
            self._alloc(n)
        C.memmove(self._in, bytes(data), n)
        if ctx is None:
            ctx = self._ctx
            ctx.ingress_ifindex = ingress_ifindex
        ctx.data_end = n  # the kernel takes the frame's extent from the context
        if self._shape != (live_frames, ctx):
            self._setup(live_frames, ctx)
        o = self._opts
        o.data_size_in, o.repeat, o.batch_size = n, repeat, batch_size
        o.data_size_out = 0 if live_frames else self._out_len
        _check(_lib.bpf_prog_test_run_opts(self.prog_fd, self._opts_ref), "BPF_PROG_TEST_RUN")
        out = b"" if live_frames else C.string_at(self._out, o.data_size_out)
        return TestRun(o.retval, out, o.duration)


def prog_test_run(prog_fd, data, **kw):
    """One ProgTestRun.run with buffers of its own."""
    return ProgTestRun(prog_fd, len(data)).run(data, **kw)


def possible_cpus():
    """Number of possible CPUs: the stride of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible") as f:
        spec = f.read().strip()
    n = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


CAP_DAC_OVERRIDE, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 1, 12, 21, 39


def privileged(write=True):
    """Whether this process may use xdplb's state: root's pins are 0600 in
    0700 folders (the owner, uid 0, or CAP_DAC_OVERRIDE), bpf() needs
    CAP_BPF or CAP_SYS_ADMIN, and changing anything (XDP attachment, loading
    the program) CAP_NET_ADMIN; a reader such as the exporter needs no more
    than bpf() and the pins. Root has them all; `nobody` has none."""
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return os.geteuid() == 0
    has = lambda cap: bool(eff >> cap & 1)  # noqa: E731
    return ((has(CAP_DAC_OVERRIDE) or os.geteuid() == 0)
            and (has(CAP_NET_ADMIN) or not write)
            and (has(CAP_SYS_ADMIN) or has(CAP_BPF)))
