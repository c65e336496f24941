"""The control plane's part of Tunnel (-i) forwarding: the outer source
addresses.

The data path encapsulates a Tunnel connection's packet from the balancer's
address on the interface the FIB sends it out of (bpf/encap.h); the FIB
answers with the interface, not a source address. `xdplb attach` therefore
writes tun_src: every interface of the netns -> its first IPv4 address of
global scope (the kernel's own choice for a packet it originates there,
inet_select_addr, for a destination outside the interface's subnets), 0
for an interface without one. Addresses changed later are picked up at the
next `xdplb attach`.
"""
import socket

from .structs import XDPLB_TUN_SRC_SLOTS

RT_SCOPE_UNIVERSE = 0


def addresses(family=socket.AF_INET):
    """[(ifindex, address, scope)] of every address of family (AF_INET,
    AF_INET6) of this netns."""
    from pyroute2 import IPRoute    # (0.25 s to import: only attach and decap need it)
    with IPRoute() as ipr:
        return [(m["index"], m.get_attr("IFA_ADDRESS"), m["scope"])
                for m in ipr.get_addr(family=family) if m.get_attr("IFA_ADDRESS")]


def interface_sources():
    """{ifindex: IPv4 address} of this netns: the first address of global
    scope of each interface (else its first one)."""
    out, scoped = {}, {}
    for idx, addr, scope in addresses():
        out.setdefault(idx, addr)
        if scope == RT_SCOPE_UNIVERSE:
            scoped.setdefault(idx, addr)
    return {**out, **scoped}


def write_sources(state):
    """tun_src as interface_sources() says, every other slot 0 (one batched
    write of the whole array). Returns the {ifindex: address} written."""
    sources = {i: a for i, a in interface_sources().items() if 0 < i < XDPLB_TUN_SRC_SLOTS}
    value = state.tun_src.value_type
    zero = value(0)
    state.tun_src.put_many(
        (i, value.from_buffer_copy(socket.inet_aton(sources[i])) if i in sources else zero)
        for i in range(XDPLB_TUN_SRC_SLOTS))
    return sources
