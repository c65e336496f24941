"""`xdplb decap IFNAME`: attach (or detach) bpf/decap.c, the real server's
decapsulation of what Tunnel forwarding sends (IPv4 or IPv6 in IPv4 or IPv6,
in IP-in-IP or GUE), for real servers whose kernel has no ipip, ip6_tunnel,
sit or fou module.

The program is compiled on its own with bcc and attached to the interface;
its maps live as long as it is attached (nothing is pinned). decap_addrs and
decap_addrs6 hold every IPv4 and IPv6 address of the netns when it is
attached (frames to other addresses, a router's transit tunnels, pass
untouched), decap_ports the GUE ports. Running it again replaces it (new
addresses, new ports); --detach removes it, and only it: another XDP program
on the interface is never touched.
"""
import ctypes as C
import os
import socket

from . import bpfsys, loader, tunnel

PROG_NAME = "xdplb_decap"
SOURCE = "decap.c"
DEFAULT_GUE_PORTS = (6080,)
MODES = {"native": bpfsys.XDP_FLAGS_DRV_MODE, "generic": bpfsys.XDP_FLAGS_SKB_MODE}


class DecapError(Exception):
    """decap could not attach or detach; the message says why."""


def running(ifindex):
    """(mode flag, program id, program name) of the XDP program on ifindex, or None."""
    for flag in MODES.values():
        pid = bpfsys.xdp_query_id(ifindex, flag)
        if pid:
            fd = bpfsys.prog_by_id(pid)
            try:
                name = bpfsys.obj_info(fd, bpfsys.BpfProgInfo).name.decode()
            finally:
                os.close(fd)
            return flag, pid, name
    return None


def compile_program():
    """bpf/decap.c compiled and loaded: (the bcc object, the XDP function)."""
    from bcc import BPF
    b = BPF(text=loader.bpf_source(SOURCE).encode(), cflags=["-Wno-unused-function"])
    return b, b.load_func(PROG_NAME.encode(), BPF.XDP)


def fill(b, addresses, gue_ports):
    """decap_addrs, decap_addrs6 (as each address's family) and decap_ports of
    a loaded decap program."""
    addrs, addrs6, ports = b[b"decap_addrs"], b[b"decap_addrs6"], b[b"decap_ports"]
    for addr in addresses:
        family, table = (socket.AF_INET6, addrs6) if ":" in addr else (socket.AF_INET, addrs)
        table[table.Key.from_buffer_copy(socket.inet_pton(family, addr))] = table.Leaf(1)
    for port in gue_ports:
        ports[C.c_uint16(socket.htons(port))] = C.c_uint8(1)


def attach(ifname, mode="native", gue_ports=DEFAULT_GUE_PORTS):
    """Attach decap to ifname (replacing an earlier decap there). Returns
    (program id, the addresses it decapsulates for)."""
    idx = loader.ifindex(ifname)
    now = running(idx)
    if now is not None and now[2] != PROG_NAME:
        raise DecapError(f"{ifname} already runs XDP program {now[2] or '(unnamed)'} "
                         f"(id {now[1]}): not replacing it")
    addresses = [addr for family in (socket.AF_INET, socket.AF_INET6)
                 for addr in sorted({addr for _, addr, _ in tunnel.addresses(family)})]
    b, fn = compile_program()
    try:
        fill(b, addresses, gue_ports)
        if now is not None and now[0] != MODES[mode]:
            bpfsys.xdp_detach(idx, now[0])
        bpfsys.xdp_attach(idx, fn.fd, MODES[mode])
        return bpfsys.obj_info(fn.fd, bpfsys.BpfProgInfo).id, addresses
    finally:
        b.cleanup()


def detach(ifname):
    """Detach decap from ifname; returns its program id."""
    idx = loader.ifindex(ifname)
    now = running(idx)
    if now is None:
        raise DecapError(f"xdplb decap is not attached to {ifname}")
    if now[2] != PROG_NAME:
        raise DecapError(f"{ifname} runs XDP program {now[2] or '(unnamed)'} (id {now[1]}), "
                         f"not xdplb decap: not detaching it")
    bpfsys.xdp_detach(idx, now[0])
    return now[1]
