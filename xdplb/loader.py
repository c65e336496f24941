"""Compile the data path with bcc once, pin it, and attach it to interfaces.

Only `xdplb attach` and the first configuration command of a netns compile
(open_state); everything later opens the pins (xdplb/state.py). bcc is
imported only to compile, so listings start fast.
"""
import ctypes as C
import os
import re
import shutil
import socket

from . import bpfsys, fault, journal, maps, tunnel
from .model import SETTINGS
from . import structs as S
from .state import (PREV_PINS, PROG_PIN, State, StateError, locked, pin_dir, private_dir,
                    reap)
from .structs import XDPLB_LAYOUT_VERSION


def _bpf_dir():
    """The data path's C sources: xdplb/bpf/ in an installed package (pyproject.toml
    maps the checkout's top-level bpf/ there), the top-level bpf/ in a checkout."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "bpf")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "bpf")


BPF_DIR = _bpf_dir()
ENTRY_FILE = "xdplb.c"
ENTRY = "xdplb_main"
# New connections continue, by tail call through the new_conn prog array, in
# the program of their scheduler's family (bpf/sched.h): XDPLB_SCHED_* ->
# function name; XDPLB_PROG_CONN builds the connection, XDPLB_PROG_TUNNEL
# encapsulates a Tunnel connection's packet (bpf/encap.h), XDPLB_PROG_FRAG
# and XDPLB_PROG_FRAG6 take IPv4's and IPv6's fragments (bpf/frag.h), XDPLB_PROG_ICMP translates ICMP errors
# and sends the data path's own ICMP answers, XDPLB_PROG_REPLY6 takes IPv6 real servers' replies
# (XDPLB_PROG_CLIENT6 what was not one).
NEW_CONN_PIN = "new_conn"
_FAMILIES = {"ring": ("rr", "wrr"), "list": ("lc", "wlc", "sed", "nq", "fo", "ovf"),
             "sh": ("sh",), "dh": ("dh",), "mh": ("mh",), "lblc": ("lblc",),
             "lblcr": ("lblcr",)}
NEW_CONN_PROGS = {**{base + getattr(S, "XDPLB_SCHED_" + sched.upper()): prefix + family
                     for base, prefix in ((0, "xdplb_new_"), (S.XDPLB_PROG_SCHED6, "xdplb_new6_"))
                     for family, scheds in _FAMILIES.items() for sched in scheds},
                  S.XDPLB_PROG_CONN: "xdplb_conn", S.XDPLB_PROG_TUNNEL: "xdplb_tunnel",
                  S.XDPLB_PROG_FRAG: "xdplb_frag", S.XDPLB_PROG_ICMP: "xdplb_icmp",
                  S.XDPLB_PROG_MAIN6: "xdplb_main6", S.XDPLB_PROG_CONN6: "xdplb_conn6",
                  S.XDPLB_PROG_ICMP6: "xdplb_icmp6", S.XDPLB_PROG_TUNNEL6: "xdplb_tunnel6",
                  S.XDPLB_PROG_FRAG6: "xdplb_frag6", S.XDPLB_PROG_REPLY6: "xdplb_reply6",
                  S.XDPLB_PROG_CLIENT6: "xdplb_client6"}

_LOCAL_INCLUDE = re.compile(r'\s*#\s*include\s*"([^"]+)"')


def bpf_source(entry=ENTRY_FILE):
    """The one text bcc compiles: bpf/<entry> with every #include "..." of a
    project header replaced by that header, recursively, the first time it
    is included (a later include of it would be empty: include guards).
    bcc rewrites map calls (`map.lookup(...)`) only in the text it is given,
    and the data path's headers make them; #line markers keep compiler
    errors naming the real file and line. A local include must not sit
    inside an #if: it is pasted (or dropped as seen) regardless."""
    seen, out = set(), []

    def paste(name):
        seen.add(name)
        out.append(f'#line 1 "bpf/{name}"')
        with open(os.path.join(BPF_DIR, name)) as f:
            for n, line in enumerate(f, 1):
                m = _LOCAL_INCLUDE.fullmatch(line.rstrip("\n"))
                if m is None:
                    out.append(line.rstrip("\n"))
                    continue
                if m.group(1) not in seen:
                    paste(m.group(1))
                out.append(f'#line {n + 1} "bpf/{name}"')

    paste(entry)
    return "\n".join(out) + "\n"


def compile_program(cflags=(), reuse=None):
    """Compile bpf/xdplb.c; returns the bcc BPF object and the loaded XDP
    function (whose new_conn prog array is filled with the scheduler programs).
    reuse: a State whose pinned maps the programs use instead of bcc's own
    (see _reuse_maps)."""
    from bcc import BPF
    b = BPF(text=bpf_source().encode(), cflags=["-Wno-unused-function", *cflags])
    try:
        if reuse is not None:
            _reuse_maps(b, reuse)
        fns = {name: b.load_func(name.encode(), BPF.XDP)
               for name in set(NEW_CONN_PROGS.values())}
        table = b[NEW_CONN_PIN.encode()]
        for idx, name in NEW_CONN_PROGS.items():
            table[C.c_int(idx)] = C.c_int(fns[name].fd)
        return b, b.load_func(ENTRY.encode(), BPF.XDP)
    except BaseException:
        b.cleanup()
        raise


MAP_SHAPE = ("type", "key_size", "value_size", "max_entries", "map_flags")


def _reuse_maps(b, state):
    """Make each map bcc created for the programs about to be loaded name the
    state's pinned map instead: its fd number is pointed at the pinned map
    (dup2, as libbpf's bpf_map__reuse_fd does), so the loaded programs
    reference the pinned maps and every entry in them. Checked first, every
    map against its pin: another shape is another layout, which a replace
    cannot carry over (StateError, nothing changed)."""
    diffs = []
    for name in maps.MAPS:
        new = bpfsys.obj_info(b[name.encode()].map_fd, bpfsys.BpfMapInfo)
        old = bpfsys.obj_info(getattr(state, name).fd, bpfsys.BpfMapInfo)
        diffs += [f"{name}.{f} {getattr(old, f)} -> {getattr(new, f)}"
                  for f in MAP_SHAPE if getattr(old, f) != getattr(new, f)]
    if diffs:
        raise StateError(f"the data path in {BPF_DIR} has other maps than the state in "
                         f"{state.folder} ({', '.join(diffs)}): a replace keeps the pinned "
                         "maps and every connection in them, so it cannot load it; nothing "
                         "was changed. To switch to it: xdplb save, xdplb detach (the "
                         "connections are lost), then xdplb restore")
    for name in maps.MAPS:
        os.dup2(getattr(state, name).fd, b[name.encode()].map_fd, inheritable=False)


def open_state(folder=None, cflags=()):
    """The state of this netns (or of folder), compiled and pinned first if
    there is none."""
    folder = folder or pin_dir(create=True)
    reap(folder)
    if not os.path.exists(os.path.join(folder, PROG_PIN)):
        create_state(folder, cflags)
    return State.open(folder=folder)


def create_state(folder, cflags=()):
    """Compile and pin a fresh state; all pins appear at once (rename of a full
    folder), its layout map holding XDPLB_LAYOUT_VERSION. The pinning runs
    under the state lock, after removing what a killed creator or remover
    left: `<folder>_tmp<pid>` folders of dead pids (full of pinned maps) and
    a folder without its program pin (state.remove unpins the program first,
    so that is a removal cut short)."""
    b, fn = compile_program(cflags)
    try:
        bpfsys.update(b[b"layout"].map_fd, C.c_uint32(0), C.c_uint32(XDPLB_LAYOUT_VERSION))
        for idx, default in SETTINGS.values():   # IPVS's settings: the kernel's defaults
            bpfsys.update(b[b"sysctl"].map_fd, C.c_uint32(idx), C.c_uint32(default))
        private_dir(os.path.dirname(folder))  # 0700, whatever the umask
        with locked(folder):
            reap(folder)
            if os.path.exists(os.path.join(folder, PROG_PIN)):
                return  # another process created it meanwhile: use theirs
            if os.path.isdir(folder):
                shutil.rmtree(folder)
            tmp = f"{folder}_tmp{os.getpid()}"  # bpffs names cannot contain dots
            shutil.rmtree(tmp, ignore_errors=True)
            os.mkdir(tmp, 0o700)
            try:
                for name in (*maps.MAPS, NEW_CONN_PIN):  # a prog array empties without a pin
                    fault.point("pin")
                    bpfsys.obj_pin(b[name.encode()].map_fd, os.path.join(tmp, name))
                fault.point("pin")
                bpfsys.obj_pin(fn.fd, os.path.join(tmp, PROG_PIN))
                fault.point("pin")
                os.rename(tmp, folder)
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
    """Attach the pinned program to ifname, then make it a redirect target.

    The data path redirects only to interfaces in tx_ports, and tx_ports must
    only name interfaces running xdplb (the others get frames through the
    stack), so tx_ports follows XDP here and goes first in detach(). A kill
    between the two steps leaves an interface attached but not a redirect
    target (traffic to it goes through the stack): running attach again
    completes it, and the next attach, detach or status repairs it
    (reconcile()). Every attach also rewrites tun_src, the outer source
    addresses of Tunnel forwarding (xdplb/tunnel.py). Returns what
    reconcile() repaired."""
    idx = ifindex(ifname)
    with locked(state.folder):
        repaired = reconcile(state)
        fault.point("attach")
        bpfsys.xdp_attach(idx, state.prog_fd, MODES[mode])
        fault.point("attach")
        state.tx_ports.put(idx, state.tx_ports.value_type(idx))
        tunnel.write_sources(state)
    return repaired


def repair(state: State):
    """What `xdplb status` runs first, under the state lock: redo the journal
    of a killed xdplbadm (xdplb/journal.py, reported on stderr) and
    reconcile(); returns the tx_ports repairs."""
    with journal.locked(state):
        return reconcile(state)


def reconcile(state: State):
    """Make tx_ports name exactly the interfaces running this state's program
    (XDP is the truth: it is what `ip link` shows): an entry without xdplb
    attached (a detach killed half-way) is removed, an attached interface
    without entry (an attach killed half-way) is added. The caller holds the
    state lock. Returns one message per repair."""
    att = {idx: name for name, idx, _ in attached(state)}
    ports = {k for k, _ in state.tx_ports.items()}
    names = {idx: name for idx, name in socket.if_nameindex()}
    out = []
    for idx in sorted(ports - set(att)):
        state.tx_ports.delete(idx)
        out.append(f"{names.get(idx, f'ifindex {idx}')} was a redirect target without xdplb "
                   f"attached: removed from tx_ports")
    for idx in sorted(set(att) - ports):
        state.tx_ports.put(idx, state.tx_ports.value_type(idx))
        out.append(f"{att[idx]} runs xdplb but was not a redirect target: added to tx_ports")
    return out


def attached(state: State):
    """[(ifname, ifindex, mode)] of interfaces running this state's program, or
    the one a replace (replace()) is swapping out."""
    ids = {_pinned_prog_id(os.path.join(state.folder, PROG_PIN))}
    prev = os.path.join(state.folder, PREV_PINS[PROG_PIN])
    if os.path.exists(prev):
        ids.add(_pinned_prog_id(prev))
    return [r for pid in sorted(ids) for r in _running(pid)]


def _pinned_prog_id(path):
    fd = bpfsys.obj_get(path)
    try:
        return bpfsys.obj_info(fd, bpfsys.BpfProgInfo).id
    finally:
        os.close(fd)


def _pin_as(fd, folder, name):
    """Pin fd as folder/name, replacing what is pinned there in one step."""
    tmp = os.path.join(folder, f"{name}_next{os.getpid()}")
    bpfsys.obj_pin(fd, tmp)
    os.rename(tmp, os.path.join(folder, name))


def replace(state: State, cflags=()):
    """A hitless upgrade (`xdplb attach --replace`, `xdplb daemon` on start):
    the data path compiled from this xdplb's bpf/ and loaded over the pinned
    maps (compile_program's reuse), then swapped in on every interface
    running the state's program. XDP swaps a program atomically, so every
    frame meets one program or the other, both on the same maps, and no
    connection notices. The old program and its prog array stay pinned
    (PREV_PINS) until no interface runs it: a prog array whose last pin
    goes is emptied, which would break the old program's new connections
    mid-swap. A replace killed half-way is undone or completed by the next
    (_finish_replace). Returns [(ifname, old prog id, new prog id)]."""
    b, fn = compile_program(cflags, reuse=state)
    folder = state.folder
    try:
        with locked(folder):
            _finish_replace(state)
            targets = attached(state)
            for name in (NEW_CONN_PIN, PROG_PIN):   # the array first: see _finish_replace
                fault.point("replace")
                fd = bpfsys.obj_get(os.path.join(folder, name))
                try:
                    _pin_as(fd, folder, PREV_PINS[name])
                finally:
                    os.close(fd)
            for name, fd in ((NEW_CONN_PIN, b[NEW_CONN_PIN.encode()].map_fd), (PROG_PIN, fn.fd)):
                fault.point("replace")
                _pin_as(fd, folder, name)
            new_id = bpfsys.obj_info(fn.fd, bpfsys.BpfProgInfo).id
            done = []
            for ifname, idx, mode in targets:
                fault.point("replace")
                old_id = bpfsys.xdp_query_id(idx, MODES[mode])
                bpfsys.xdp_attach(idx, fn.fd, MODES[mode])
                done.append((ifname, old_id, new_id))
            for name in (PROG_PIN, NEW_CONN_PIN):
                fault.point("replace")
                os.unlink(os.path.join(folder, PREV_PINS[name]))
            os.close(state.prog_fd)
            state.prog_fd = bpfsys.obj_get(os.path.join(folder, PROG_PIN))
            return done
    finally:
        b.cleanup()


def _finish_replace(state: State):
    """What a replace killed half-way left (the caller holds the lock): with
    the new program not pinned yet, the old prog array goes back under its
    name (it may have been replaced already); with it pinned, the
    interfaces still on the old program are swapped to it. Then the old
    pins go. Either way the state is one program and its array again."""
    folder = state.folder
    for leftover in os.listdir(folder):
        if "_next" in leftover:
            os.unlink(os.path.join(folder, leftover))
    prev_prog = os.path.join(folder, PREV_PINS[PROG_PIN])
    prev_array = os.path.join(folder, PREV_PINS[NEW_CONN_PIN])
    if os.path.exists(prev_prog):
        pinned = os.path.join(folder, PROG_PIN)
        if _pinned_prog_id(prev_prog) == _pinned_prog_id(pinned):
            os.rename(prev_array, os.path.join(folder, NEW_CONN_PIN))
        else:
            fd = bpfsys.obj_get(pinned)
            try:
                for _, idx, mode in _running(_pinned_prog_id(prev_prog)):
                    bpfsys.xdp_attach(idx, fd, MODES[mode])
            finally:
                os.close(fd)
        os.unlink(prev_prog)
    if os.path.exists(prev_array):
        os.unlink(prev_array)


def _running(pid):
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
    """Detach from ifname, or from every interface running this state's program
    (tx_ports entry first: see attach())."""
    with locked(state.folder):
        reconcile(state)
        targets = [(n, i, m) for n, i, m in attached(state) if ifname in (None, n)]
        if ifname is not None and not targets:
            raise ValueError(f"xdplb is not attached to {ifname}")
        for name, idx, mode in targets:
            fault.point("detach")
            state.tx_ports.delete(idx)
            fault.point("detach")
            bpfsys.xdp_detach(idx, MODES[mode])
        if ifname is None:
            fault.point("detach")  # (the caller unpins the state next)
    return [t[0] for t in targets]


def detach_program(folder):
    """Detach the program pinned in folder from every interface running it,
    without opening the state's maps (a state of another layout, which
    `xdplb detach` removes). Returns the interfaces."""
    fd = bpfsys.obj_get(os.path.join(folder, PROG_PIN))
    try:
        pid = bpfsys.obj_info(fd, bpfsys.BpfProgInfo).id
    finally:
        os.close(fd)
    out = []
    for name, idx, mode in _running(pid):
        fault.point("detach")
        bpfsys.xdp_detach(idx, MODES[mode])
        out.append(name)
    return out
