"""Value objects of the control plane: services, destinations, names, limits.

These are plain data (no maps): ipvsfmt renders them, control.py converts
them to and from the pinned maps, adm.py builds them from the command line.
Addresses are text (dotted quad, or IPv6 text as inet_ntop writes it: the
family follows from the text unless given); ports are host-order ints.
"""
import socket
from collections import namedtuple

from . import sched as _sched
from . import structs as _st
from .structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_LOCALNODE, IP_VS_CONN_F_MASQ,
                      IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GRE,
                      IP_VS_SVC_F_ONEPACKET, IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_F_SCHED1,
                      IP_VS_SVC_F_SCHED2, IP_VS_SVC_F_SCHED3, XDPLB_CONN_F_FULLNAT)

AF_INET = 2
AF_INET6 = 10
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132

PROTO_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}
PROTO_LOWER = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}

IP_VS_SVC_F_SCHED_FLAGS = IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 | IP_VS_SVC_F_SCHED3
DEF_SCHED = "wlc"
IPVS_SVC_PERSISTENT_TIMEOUT = 6 * 60
MAX_TIMEOUT = 86400 * 31

# Every scheduler kernel IPVS knows; xdplb runs all but twos (not in ipvsadm 1.31).
IPVS_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq",
                   "fo", "ovf", "mh", "twos")
SCHED_IDS = {name: getattr(_st, "XDPLB_SCHED_" + name.upper()) for name in _sched.SCHEDULERS}
SCHED_NAMES = {v: k for k, v in SCHED_IDS.items()}
IPVS_PES = ("sip",)

FWD_NAMES = {IP_VS_CONN_F_MASQ: "Masq", IP_VS_CONN_F_LOCALNODE: "Local",
             IP_VS_CONN_F_TUNNEL: "Tunnel", IP_VS_CONN_F_DROUTE: "Route",
             XDPLB_CONN_F_FULLNAT: "FullNat"}
FWD_SWITCH = {IP_VS_CONN_F_MASQ: "-m", IP_VS_CONN_F_TUNNEL: "-i",
              IP_VS_CONN_F_LOCALNODE: "-g", IP_VS_CONN_F_DROUTE: "-g",
              XDPLB_CONN_F_FULLNAT: "--fullnat"}
SUPPORTED_FWD = (IP_VS_CONN_F_MASQ, IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_TUNNEL, XDPLB_CONN_F_FULLNAT)

# Tunnel types / flags (IPVS's IP_VS_CONN_F_TUNNEL_TYPE_* and
# IP_VS_TUNNEL_ENCAP_FLAG_*), for rendering.
TUN_TYPES = {0: "ipip", 1: "gue", 2: "gre"}
TUN_FLAG_NAMES = {0: "-c", 1: "+c", 2: "r+c"}        # nocsum, csum, remcsum
TUN_FLAG_SWITCH = {0: "--tun-nocsum", 1: "--tun-csum", 2: "--tun-remcsum"}

# IPVS connection timeouts per state (docs/ipvs-behaviour.md §6.3), seconds.
TCP_STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
                   "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
TCP_ACTIVE_STATES = frozenset((1, 2, 3, 10))    # ESTABLISHED SYN_SENT SYN_RECV SYNACK
UDP_TIMEOUT = 300

# IPVS's net.ipv4.vs.* settings the data path follows (bpf/xdplb.h, sysctl map;
# `xdplb set`): name -> (index, the kernel's default).
SETTINGS = {"conn_reuse_mode": (_st.XDPLB_SYSCTL_CONN_REUSE_MODE, 1),
            "expire_nodest_conn": (_st.XDPLB_SYSCTL_EXPIRE_NODEST_CONN, 0),
            "expire_quiescent_template": (_st.XDPLB_SYSCTL_EXPIRE_QUIESCENT_TEMPLATE, 0),
            "sloppy_tcp": (_st.XDPLB_SYSCTL_SLOPPY_TCP, 0)}
DEFAULT_TIMEOUTS = (900, 120, 300)             # tcp tcpfin udp, as --timeout shows


# IPVS's counters of a service or destination
Stats = namedtuple("Stats", "conns inpkts outpkts inbytes outbytes", defaults=(0,) * 5)


class _Plain:
    """Plain data, equal when every attribute is. (Written out rather than
    dataclasses: importing that pulls in inspect, some 7 ms of every
    xdplbadm run.)"""

    def __eq__(self, other):
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def family(addr):
    """The address family of an address's text."""
    return AF_INET6 if ":" in addr else AF_INET


class Destination(_Plain):
    """A real server of a service (port host order), with what listings show."""

    def __init__(self, addr, port, fwd=IP_VS_CONN_F_DROUTE, weight=1, u_threshold=0,
                 l_threshold=0, af=None, active=0, inactive=0, persist=0, stats=Stats(),
                 rate=Stats(), tun_type=0, tun_port=0, tun_flags=0, slot=0, seq=0):
        self.addr, self.port, self.fwd, self.weight = addr, port, fwd, weight
        self.u_threshold, self.l_threshold = u_threshold, l_threshold
        self.af = family(addr) if af is None else af
        self.active, self.inactive, self.persist = active, inactive, persist
        self.stats, self.rate = stats, rate
        self.tun_type, self.tun_port, self.tun_flags = tun_type, tun_port, tun_flags
        self.slot, self.seq = slot, seq


class LocalAddress(_Plain):
    """A local address of a service (DPVS's laddr: full-NAT's and hairpin's
    source), with its interface (-F: ifindex, and the name listings show, ""
    for none) and what -G shows."""

    def __init__(self, addr, ifindex=0, ifname="", conflicts=0, conns=0):
        self.addr, self.ifindex, self.ifname = addr, ifindex, ifname
        self.conflicts, self.conns = conflicts, conns


class Service(_Plain):
    """A virtual service (port host order; netmask a dotted quad, or an IPv6
    prefix length: all ones, or 128, unless given), with its destinations,
    its local addresses (LocalAddress, in the order added) and what listings
    show."""

    def __init__(self, proto, addr, port, sched=DEF_SCHED, flags=0, timeout=0,
                 netmask=None, af=None, fwmark=0, pe="", dests=None,
                 stats=Stats(), rate=Stats(), slot=0, seq=0, laddrs=None):
        self.proto, self.addr, self.port, self.sched = proto, addr, port, sched
        self.af = family(addr) if af is None else af
        if netmask is None:
            netmask = 128 if self.af == AF_INET6 else "255.255.255.255"
        self.flags, self.timeout, self.netmask = flags, timeout, netmask
        self.fwmark, self.pe = fwmark, pe
        self.dests = [] if dests is None else dests
        self.stats, self.rate, self.slot, self.seq = stats, rate, slot, seq
        self.laddrs = [] if laddrs is None else laddrs

    @property
    def key(self):
        return (self.proto, self.addr, self.port)

    @property
    def persistent(self):
        return bool(self.flags & IP_VS_SVC_F_PERSISTENT)

    @property
    def hairpin(self):
        return bool(self.flags & _st.XDPLB_SVC_F_HAIRPIN)


class XdplbError(Exception):
    """A refused operation: message for stderr, and ipvsadm's exit code."""

    def __init__(self, message, code=255):
        super().__init__(message)
        self.message, self.code = message, code


# ipvs_strerror's texts for the kernel refusals xdplb reproduces.
E_SVC_EXISTS = "Service already exists"
E_NO_SCHED = "Scheduler or persistence engine not found"
E_NO_SERVICE = "No such service"
E_SVC_NOT_DEFINED = "Service not defined"
E_DEST_EXISTS = "Destination already exists"
E_NO_DEST = "No such destination"
E_ERANGE = "Numerical result out of range"
E_EINVAL = "Invalid operation.  Possibly wrong module version, address not unicast, ..."
E_ENOMEM = "Memory allocation problem"
E_NO_DAEMON = "No daemon is running"

SUPPORTED = ("xdplb supports TCP and UDP services, IPv4 and IPv6, with every ipvsadm "
             "scheduler and -m (masquerading), -g (direct routing) or -i (tunnelling: ipip, "
             "gue; either family under either) servers")
E_FAMILY = "Different address family is allowed only for tunneling servers"
E_FWMARK = ("xdplb: firewall-mark services (-f) cannot work with xdplb: the XDP data path "
            "sees packets before the kernel builds a socket buffer, so there is no packet "
            "mark (set by iptables/nftables) to match; use -t or -u services")


def unsupported(what):
    return XdplbError(f"xdplb: {what} not supported yet ({SUPPORTED})")


def check_scheduler(name):
    """Unknown names: the kernel's ENOENT text; known but not run here: say so."""
    if name in SCHED_IDS:
        return
    if name in IPVS_SCHEDULERS:
        raise XdplbError(f"xdplb: scheduler '{name}' is not supported yet ({SUPPORTED})")
    raise XdplbError(E_NO_SCHED)


def check_service_kind(af, proto, fwmark):
    """Refuse the kinds of virtual service the data path does not handle."""
    if fwmark:
        raise XdplbError(E_FWMARK)
    if af not in (AF_INET, AF_INET6):
        raise unsupported(f"address family {af} is")
    if proto == IPPROTO_SCTP:
        raise unsupported("SCTP services are")
    if proto not in (IPPROTO_TCP, IPPROTO_UDP):
        raise unsupported(f"protocol {proto} is")


def check_service(svc):
    """Everything kernel IPVS would check on -A/-E, then xdplb's own limits.

    (The existence checks are control.py's: they come first in the kernel.)
    """
    check_scheduler(svc.sched)
    if svc.pe and svc.pe not in IPVS_PES:
        raise XdplbError(E_NO_SCHED)
    check_service_kind(svc.af, svc.proto, svc.fwmark)
    if svc.pe:
        raise unsupported("persistence engines (--pe) are")
    if svc.flags & IP_VS_SVC_F_ONEPACKET:
        raise unsupported("one-packet scheduling (-o) is")
    if svc.af == AF_INET6:
        if not isinstance(svc.netmask, int) or not 1 <= svc.netmask <= 128:
            raise XdplbError(E_EINVAL)
        return
    try:
        socket.inet_aton(svc.netmask)
    except (OSError, TypeError):
        raise XdplbError(E_EINVAL) from None


def is_unicast(addr):
    """IPv4: what inet_addr_type() would not call broadcast, zeronet or
    multicast. IPv6: what ipv6_addr_type() calls unicast and not link-local
    (so not multicast ff00::/8, link-local fe80::/10, v4-mapped
    ::ffff:0:0/96 or ::)."""
    if family(addr) == AF_INET6:
        b = socket.inet_pton(socket.AF_INET6, addr)
        return not (b[0] == 0xff or (b[0] == 0xfe and b[1] & 0xc0 == 0x80)
                    or b[:12] == bytes(10) + b"\xff\xff" or b == bytes(16))
    b = socket.inet_aton(addr)
    return not (b[0] == 0 or b == b"\xff\xff\xff\xff" or 224 <= b[0] <= 239)


def check_family(svc_af, dest):
    """A real server of the other family than its service: ipvsadm's refusal
    unless it tunnels (the server's family is the outer header's, the
    service's the inner packet's: IPv6 in IPv4, IPv4 in IPv6)."""
    if dest.fwd != IP_VS_CONN_F_TUNNEL and dest.af != svc_af:
        raise XdplbError(E_FAMILY, 2)


def check_dest(dest, svc_af=AF_INET):
    """The kernel's checks on -a/-e of a real server of a service of family
    svc_af (ERANGE, EINVAL), then xdplb's limits."""
    check_family(svc_af, dest)
    if dest.weight < 0 or dest.l_threshold > dest.u_threshold:
        raise XdplbError(E_ERANGE)
    if not is_unicast(dest.addr):
        raise XdplbError(E_EINVAL)
    if dest.fwd == IP_VS_CONN_F_TUNNEL and dest.tun_type == IP_VS_CONN_F_TUNNEL_TYPE_GRE:
        raise unsupported("GRE tunnels (--tun-type gre) are")
    if dest.fwd not in SUPPORTED_FWD:
        raise unsupported("this forwarding method is")
