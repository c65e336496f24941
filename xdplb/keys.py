"""The maps' keys and addresses per family: an address's text and its 4 or
16 bytes, the fold that stands for an IPv6 address where IPv4's four bytes
are kept, and the keys of services, real servers and the rs_filter bit.
Pure functions over the mirrors (xdplb/structs.py): the planner
(config.py), the sweep (conns.py) and the listings (control.py) share them.
"""
import ctypes as C
import socket
import sys

from .sched import hash_32
from .structs import (XDPLB_AF_INET, XDPLB_AF_INET6, XDPLB_RS_FILTER_BITS, RsKey, RsKey6,
                      RsSvcs, RsSvcs6, SvcKey, SvcKey6)


def family(addr):
    """The address family of an address's text (the model's addresses are
    dotted quads or IPv6 text)."""
    return XDPLB_AF_INET6 if ":" in addr else XDPLB_AF_INET


def a2b(addr):
    """Address text -> the 4 or 16 address bytes of a mirror."""
    af = family(addr)
    raw = socket.inet_pton(socket.AF_INET6 if af == XDPLB_AF_INET6 else socket.AF_INET, addr)
    return (C.c_uint8 * len(raw))(*raw)


def b2a(b):
    """4 or 16 address bytes -> text (IPv6 compressed, as inet_ntop writes it)."""
    b = bytes(b)
    return socket.inet_ntop(socket.AF_INET6 if len(b) == 16 else socket.AF_INET, b)


def fold(addr6):
    """The 4 bytes standing for an IPv6 address where IPv4's are kept (a
    destination's addr, a connection's addr, the rs_filter bit): the XOR of
    its four 32-bit words, as bpf/hash.h's addr_fold and the kernel's mh."""
    b = bytes(addr6)
    return (int.from_bytes(b[0:4], "big") ^ int.from_bytes(b[4:8], "big")
            ^ int.from_bytes(b[8:12], "big") ^ int.from_bytes(b[12:16], "big")).to_bytes(4, "big")


def dest_addr(d):
    """A DestEntry's (or Conn6's) own address bytes: 16 for IPv6, else 4."""
    return bytes(d.addr6) if d.af == XDPLB_AF_INET6 else bytes(d.addr)


def netmask_field(svc):
    """SvcEntry.netmask of a model.Service: the IPv4 mask's bytes, or an IPv6
    service's prefix length as a host-order integer (bpf/xdplb.h)."""
    if svc.af == XDPLB_AF_INET6:
        return (C.c_uint8 * 4)(*int(svc.netmask).to_bytes(4, sys.byteorder))
    return a2b(svc.netmask)


def netmask_of(entry, af):
    """The model's netmask of a SvcEntry: dotted quad, or IPv6 prefix length."""
    if af == XDPLB_AF_INET6:
        return int.from_bytes(bytes(entry.netmask), sys.byteorder)
    return b2a(entry.netmask)


def svc_key(proto, addr, port):
    """The services (IPv4) or services6 key of a model service key."""
    return (SvcKey6 if family(addr) == XDPLB_AF_INET6 else SvcKey)(
        a2b(addr), socket.htons(port), proto, 0)


def svc_map(key):
    """The map a service key (proto, addr, port) lives in."""
    return "services6" if family(key[1]) == XDPLB_AF_INET6 else "services"


def svc_key_of(raw):
    """SvcKey or SvcKey6 from its bytes (rs_table's values name services)."""
    return (SvcKey6 if len(raw) == C.sizeof(SvcKey6) else SvcKey).from_buffer_copy(raw)


def rs_map(addr):
    """The real-server table of an address (bytes): rs_table or rs_table6."""
    return "rs_table6" if len(addr) == 16 else "rs_table"


def rs_value(svcs):
    """rs_table(6)'s value naming services [SvcKey(6) bytes], newest first."""
    v = (RsSvcs6 if svcs and len(svcs[0]) == C.sizeof(SvcKey6) else RsSvcs)()
    v.n = len(svcs)
    for i, sk in enumerate(svcs):
        C.memmove(C.byref(v.svc[i]), sk, len(sk))
    return v


def rs_filter_bit(addr):
    """rs_filter's bit of an address (bytes): bpf/hash.h's rs_filter_bit,
    of an IPv6 address's fold."""
    if len(addr) == 16:
        addr = fold(addr)
    return hash_32(int.from_bytes(addr, "big"), XDPLB_RS_FILTER_BITS)


def rs_key(svc_k, addr, port):
    """The rs_table(6) key of a masquerading destination (address bytes,
    network-order port) of service svc_k = (proto, addr, port): a reply
    comes from the real port, the client's destination port when the
    service or the destination has port 0."""
    key = RsKey6 if len(addr) == 16 else RsKey
    return bytes(key((C.c_uint8 * len(addr))(*addr), port if svc_k[2] and port else 0,
                     svc_k[0], 0))


def key_tuple(k):
    """SvcKey or SvcKey6 -> (proto, addr, port), the model's service key."""
    return (k.proto, b2a(k.addr), socket.ntohs(k.port))
