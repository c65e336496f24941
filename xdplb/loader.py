"""Compile the data path with bcc once, pin it, and attach it to interfaces.

Only `xdplb attach` and the first configuration command of a netns compile;
everything later opens the pins (xdplb/state.py).
"""
import os
import shutil
import socket

from . import bpfsys, maps
from .state import PROG_PIN, State

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
ENTRY = "xdplb_main"
# New connections continue, by tail call through the new_conn prog array, in
# the program of their scheduler's family (bpf/xdplb.c): XDPLB_SCHED_* ->
# function name.
NEW_CONN_PIN = "new_conn"
NEW_CONN_PROGS = {1: "xdplb_new_ring", 2: "xdplb_new_ring",
                  **{i: "xdplb_new_list" for i in range(3, 9)},
                  9: "xdplb_new_sh", 10: "xdplb_new_dh", 11: "xdplb_new_mh",
                  12: "xdplb_new_lblc", 13: "xdplb_new_lblcr",
                  15: "xdplb_conn"}   # XDPLB_PROG_CONN: builds the connection


def compile_program(cflags=()):
    """Compile bpf/xdplb.c; returns the bcc BPF object and the loaded XDP
    function (whose new_conn prog array is filled with the scheduler programs)."""
    import ctypes as C
    from bcc import BPF
    b = BPF(src_file=os.path.join(BPF_DIR, "xdplb.c").encode(),
            cflags=[f"-I{BPF_DIR}", "-Wno-unused-function", *cflags])
    fns = {name: b.load_func(name.encode(), BPF.XDP) for name in set(NEW_CONN_PROGS.values())}
    table = b[NEW_CONN_PIN.encode()]
    for idx, name in NEW_CONN_PROGS.items():
        table[C.c_int(idx)] = C.c_int(fns[name].fd)
    return b, b.load_func(ENTRY, BPF.XDP)


def create_state(folder, cflags=()):
    """Compile and pin a fresh state; all pins appear at once (rename of a full folder)."""
    b, fn = compile_program(cflags)
    parent = os.path.dirname(folder)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    tmp = f"{folder}_tmp{os.getpid()}"  # bpffs names cannot contain dots
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp, 0o700)
    try:
        for name in (*maps.MAPS, NEW_CONN_PIN):  # a prog array empties without a pin
            bpfsys.obj_pin(b[name.encode()].map_fd, os.path.join(tmp, name))
        bpfsys.obj_pin(fn.fd, os.path.join(tmp, PROG_PIN))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.exists(os.path.join(folder, PROG_PIN)):
                raise
            shutil.rmtree(tmp)  # another process created it first: use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        b.cleanup()


MODES = {"native": bpfsys.XDP_FLAGS_DRV_MODE, "generic": bpfsys.XDP_FLAGS_SKB_MODE,
         "offload": bpfsys.XDP_FLAGS_HW_MODE}
MODE_NAMES = {bpfsys.XDP_ATTACHED_DRV: "native", bpfsys.XDP_ATTACHED_SKB: "generic",
              bpfsys.XDP_ATTACHED_HW: "offload"}


def ifindex(ifname):
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise ValueError(f"no such interface: {ifname!r}") from None


def attach(state: State, ifname, mode="native"):
    """Attach the pinned program to ifname and make it a redirect target."""
    idx = ifindex(ifname)
    bpfsys.xdp_attach(idx, state.prog_fd, MODES[mode])
    state.tx_ports.put(idx, maps.MAPS["tx_ports"][2](idx))


def attached(state: State):
    """[(ifname, ifindex, mode)] of interfaces running this state's program."""
    pid = state.prog_id()
    out = []
    for idx, name in socket.if_nameindex():
        for flag, mode in ((bpfsys.XDP_FLAGS_DRV_MODE, "native"),
                           (bpfsys.XDP_FLAGS_SKB_MODE, "generic")):
            try:
                if bpfsys.xdp_query_id(idx, flag) == pid:
                    out.append((name, idx, mode))
            except OSError:
                pass
    return out


def detach(state: State, ifname=None):
    """Detach from ifname, or from every interface running this state's program."""
    targets = [(n, i, m) for n, i, m in attached(state) if ifname in (None, n)]
    if ifname is not None and not targets:
        raise ValueError(f"xdplb is not attached to {ifname}")
    for name, idx, mode in targets:
        bpfsys.xdp_detach(idx, MODES[mode])
        state.tx_ports.delete(idx)
    return [t[0] for t in targets]
