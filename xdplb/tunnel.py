"""The control plane's part of Tunnel (-i) forwarding: the outer source
addresses.

The data path encapsulates a Tunnel connection's packet from the balancer's
address on the interface the FIB sends it out of (bpf/encap.h), in the
real server's family; the FIB answers with the interface, not a source
address. `xdplb attach` therefore writes, for every interface of the netns:

* tun_src: its first IPv4 address of global scope (the kernel's own choice
  for a packet it originates there, inet_select_addr, for a destination
  outside the interface's subnets), else its first one, else 0;
* tun_src6: its first IPv6 address of global scope that is usable as a
  source (not tentative, DAD not failed, not deprecated: what the kernel's
  source selection, ipv6_dev_get_saddr, avoids), else all zero (a
  link-local address cannot reach a real server off the link).

Addresses changed later are picked up at the next `xdplb attach`.
"""
import socket

from .structs import XDPLB_TUN_SRC_SLOTS

RT_SCOPE_UNIVERSE = 0
# IFA_F_*: an IPv6 address the kernel would not pick as a source
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
NOT_A_SOURCE = IFA_F_DADFAILED | IFA_F_DEPRECATED | IFA_F_TENTATIVE


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


def interface_sources6():
    """{ifindex: IPv6 address} of this netns: each interface's first IPv6
    address of global scope usable as a source (interfaces without one are
    left out)."""
    from pyroute2 import IPRoute
    out = {}
    with IPRoute() as ipr:
        for m in ipr.get_addr(family=socket.AF_INET6):
            flags = m.get_attr("IFA_FLAGS") or m["flags"]   # (the 32-bit flags when given)
            if m["scope"] == RT_SCOPE_UNIVERSE and not flags & NOT_A_SOURCE \
                    and m.get_attr("IFA_ADDRESS"):
                out.setdefault(m["index"], m.get_attr("IFA_ADDRESS"))
    return out


def _write(table, sources, encode):
    """One batched write of the whole array: sources' slots encoded, every
    other slot zero. Returns the {ifindex: address} written."""
    sources = {i: a for i, a in sources.items() if 0 < i < XDPLB_TUN_SRC_SLOTS}
    zero = table.value_type()
    table.put_many((i, encode(sources[i]) if i in sources else zero)
                   for i in range(XDPLB_TUN_SRC_SLOTS))
    return sources


def write_sources(state):
    """tun_src and tun_src6 as interface_sources() and interface_sources6()
    say, every other slot 0. Returns ({ifindex: IPv4 address}, {ifindex:
    IPv6 address}) written."""
    v4 = state.tun_src.value_type
    v6 = state.tun_src6.value_type
    return (_write(state.tun_src, interface_sources(),
                   lambda a: v4.from_buffer_copy(socket.inet_aton(a))),
            _write(state.tun_src6, interface_sources6(),
                   lambda a: v6.from_buffer_copy(socket.inet_pton(socket.AF_INET6, a))))
