"""The host's side of a service's local addresses (-P -z ADDR [-F IFNAME]).

A local address is the source of full-NAT's and hairpin's packets, so the
real servers' replies come back to it: it must be an address of this host,
i.e. of the network namespace whose xdplb state the command changes (every
state is its netns's: xdplb/state.py). -F names an interface of that netns;
the maps keep its ifindex and listings show its name again.

Each is a netlink question through pyroute2, which takes about 0.25 s to
import: only the commands that need it (-P, and listings of local addresses
with an interface) pay for it.
"""
import functools
import socket

from .model import XdplbError, family


def _ipr():
    from pyroute2 import IPRoute
    return IPRoute()


def _packed(addr):
    af = socket.AF_INET6 if family(addr) == socket.AF_INET6 else socket.AF_INET
    return socket.inet_pton(af, addr)


@functools.cache
def _addresses():
    """The packed addresses of this netns's interfaces, asked once per
    process (an -R of many -P lines asks netlink once). IFA_LOCAL is the
    host's own end of a point-to-point link; IFA_ADDRESS its peer's there,
    the host's own elsewhere."""
    with _ipr() as ipr:
        return frozenset(_packed(own) for m in ipr.get_addr()
                         if (own := m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")))


def on_host(addr):
    """Is addr (IPv4 or IPv6 text) an address of an interface of this netns?"""
    return _packed(addr) in _addresses()


def check_on_host(addr):
    if not on_host(addr):
        raise XdplbError(f"xdplb: local address {addr} is not an address of this host: "
                         f"add it to an interface first (full-NAT's replies come back to it)")


def ifindex(name):
    """The ifindex of interface name in this netns; XdplbError if there is none."""
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name) if 0 < len(name) < 16 else []
    if not found:
        raise XdplbError(f"xdplb: no interface '{name}' on this host (-F)")
    return found[0]


def ifnames():
    """{ifindex: name} of this netns's interfaces."""
    with _ipr() as ipr:
        return {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}


def ifname(index, names):
    """The name listings and -S show for ifindex `index` (0: none): a gone
    interface shows as `?<index>`, which -R refuses as no such interface."""
    if not index:
        return ""
    return names.get(index) or f"?{index}"
