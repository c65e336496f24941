"""Local addresses of a service (DPVS's --add-laddr / --del-laddr): the
planner's operations on the laddrs map (bpf/xdplb.h), which full-NAT and
hairpin connections take their source address from, and the check that a
full-NAT real server has one. xdplb/config.py re-exports the operations
beside the others (config.add_laddr, config.delete_laddr).
"""
from . import model
from .model import E_ENOMEM, E_SVC_NOT_DEFINED, XdplbError
from .structs import XDPLB_CONN_F_FULLNAT, XDPLB_LADDR_MAX, LaddrSet
from .keys import a2b
from .tables import BREAK, Plan

E_NEED_LADDR = "Full-NAT needs a local address: add one with --add-laddr"
E_LADDR_EXISTS = "Local address already exists"
E_NO_LADDR = "No such local address"


def check_fullnat(t, entry, dest):
    """A full-NAT real server needs a local address of its service."""
    if dest.fwd == XDPLB_CONN_F_FULLNAT and not t.laddrs(entry.slot):
        raise XdplbError(E_NEED_LADDR)


def _laddr_set(laddrs):
    """laddrs' value of [(address text, ifindex)]."""
    v = LaddrSet(n=len(laddrs))
    for i, (addr, ifindex) in enumerate(laddrs):
        raw = bytes(a2b(addr))
        v.a[i].addr[:len(raw)] = raw
        v.a[i].ifindex, v.a[i].af = ifindex, model.family(addr)
    return v


def drop_laddrs(t, plan, slot):
    if t.laddrs(slot):
        plan.zero("laddrs", slot, BREAK)


def add_laddr(t, svc_k, addr, ifindex=0):
    """--add-laddr: a local address (and its interface's index, 0: none
    given) of service svc_k = (proto, addr, port), whose full-NAT and
    hairpin connections leave from it."""
    entry = t.service(tuple(svc_k))
    if entry is None:
        raise XdplbError(E_SVC_NOT_DEFINED)
    if model.family(addr) != model.family(svc_k[1]):
        raise XdplbError("xdplb: a local address must be of its service's address family")
    if not model.is_unicast(addr):
        raise XdplbError(model.E_EINVAL)
    have = t.laddrs(entry.slot)
    if any(a == addr for a, _ in have):
        raise XdplbError(E_LADDR_EXISTS)
    if len(have) >= XDPLB_LADDR_MAX:
        raise XdplbError(f"{E_ENOMEM}: a service has at most {XDPLB_LADDR_MAX} local "
                         "addresses in xdplb")
    plan = Plan()
    plan.put("laddrs", entry.slot, _laddr_set(have + [(addr, ifindex)]))
    return plan


def delete_laddr(t, svc_k, addr):
    """--del-laddr. The last one stays while the service has full-NAT real
    servers (their new connections would be dropped)."""
    entry = t.service(tuple(svc_k))
    if entry is None:
        raise XdplbError(E_SVC_NOT_DEFINED)
    have = t.laddrs(entry.slot)
    rest = [(a, i) for a, i in have if a != addr]
    if len(rest) == len(have):
        raise XdplbError(E_NO_LADDR)
    if not rest and any(d.fwd == XDPLB_CONN_F_FULLNAT for _, d in t.dests_of(entry.slot)):
        raise XdplbError("xdplb: the service's full-NAT real servers need a local address: "
                         "delete them or change their forwarding method first")
    plan = Plan()
    if rest:
        plan.put("laddrs", entry.slot, _laddr_set(rest))
    else:
        plan.zero("laddrs", entry.slot)
    return plan
