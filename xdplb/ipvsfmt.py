"""ipvsadm 1.31's output, byte for byte (docs/ipvs-behaviour.md §4).

Everything here works on plain model objects (xdplb/model.py); nothing reads
maps, so the renderer can be tested with any data, including kinds of
service that xdplb does not run (IPv6, fwmark, SCTP, tunnels).
"""
import functools
import socket

from .model import (AF_INET, AF_INET6, FWD_NAMES, FWD_SWITCH, IP_VS_SVC_F_ONEPACKET,
                    IP_VS_SVC_F_SCHED1, IP_VS_SVC_F_SCHED2, IP_VS_SVC_F_SCHED3,
                    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, PROTO_LOWER, TUN_FLAG_NAMES,
                    TUN_FLAG_SWITCH, TUN_TYPES, family)
from .structs import IP_VS_CONN_F_TUNNEL

FMT_NONE = 0x0000
FMT_NUMERIC = 0x0001
FMT_RULE = 0x0002
FMT_STATS = 0x0004
FMT_RATE = 0x0008
FMT_THRESHOLDS = 0x0010
FMT_PERSISTENTCONN = 0x0020
FMT_NOSORT = 0x0040
FMT_EXACT = 0x0080
FMT_TUN_INFO = 0x0100

IPVS_VERSION = "1.2.1"
CONN_TAB_SIZE = 4096
HEADER = f"IP Virtual Server version {IPVS_VERSION} (size={CONN_TAB_SIZE})\n"


class Resolver:
    """Name lookups for output without -n (gethostbyaddr / getservbyport)."""

    def host(self, af, addr):
        try:
            return socket.gethostbyaddr(addr)[0]
        except (OSError, UnicodeError):
            return None

    def serv(self, port, proto):
        pname = PROTO_LOWER.get(proto)
        try:
            return socket.getservbyport(port, pname) if pname else socket.getservbyport(port)
        except (OSError, OverflowError):
            return None


RESOLVER = Resolver()


def largenum(i, fmt=0):
    """print_largenum: 9 characters, 1000-based K/M/G/T unless --exact."""
    if fmt & FMT_EXACT:
        s = str(i)
        return s.rjust(9 if len(s) <= 8 else len(s) + 1)
    if i < 100000000:
        return "%9d" % i
    if i < 1000000000:
        return "%8dK" % (i // 1000)
    if i < 100000000000:
        return "%8dM" % (i // 1000000)
    if i < 100000000000000:
        return "%8dG" % (i // 1000000000)
    return "%8dT" % (i // 1000000000000)


def addrport(af, addr, port, proto, fmt, resolver=None):
    """addrport_to_anyname (a 60-byte buffer: at most 59 characters)."""
    lb, rb = ("", "") if af == AF_INET else ("[", "]")
    if fmt & FMT_NUMERIC:
        s = f"{lb}{addr}{rb}:{port}"
    else:
        r = resolver or RESOLVER
        host = r.host(af, addr) or addr
        serv = r.serv(port, proto) or str(port)
        s = f"{lb}{host}{rb}:{serv}"
    return s[:59]


# --- sorting (libipvs ipvs_cmp_services / ipvs_cmp_dests) ------------------------

def _i32(x):
    x &= 0xffffffff
    return x - 0x100000000 if x & 0x80000000 else x


def _words(addr):
    """An address as libipvs holds it (union nf_inet_addr): four host-order
    32-bit words, an IPv4 address in the first and zeros after it."""
    raw = socket.inet_pton(AF_INET6 if family(addr) == AF_INET6 else AF_INET, addr)
    return [int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4)] + \
        [0] * (4 - len(raw) // 4)


def _cmp_addr(af, a, b):
    """libipvs's comparison in family af, the first operand's: IPv6 word by
    word, IPv4 the first word only, each as (int)(a - b). An IPv4 and an
    IPv6 server of one (tunnel) service compare in the first one's family."""
    wa, wb = _words(a), _words(b)
    for x, y in zip(wa, wb) if af == AF_INET6 else ((wa[0], wb[0]),):
        r = _i32(x - y)
        if r:
            return r
    return 0


def cmp_services(s1, s2):
    r = _i32(s1.fwmark - s2.fwmark)
    if r:
        return r
    r = s1.af - s2.af
    if r:
        return r
    r = s1.proto - s2.proto
    if r:
        return r
    r = _cmp_addr(s1.af, s1.addr, s2.addr) if not s1.fwmark else 0
    if r:
        return r
    return s1.port - s2.port


def cmp_dests(d1, d2):
    r = _cmp_addr(d1.af, d1.addr, d2.addr)
    if r:
        return r
    return d1.port - d2.port


def sort_services(services):
    return sorted(services, key=functools.cmp_to_key(cmp_services))


def merge_sort(items, cmp):
    """glibc 2.36's qsort (msort_with_tmp: top-down halves, the left one's
    element first unless cmp says it is greater). With a comparator that is
    neither transitive nor antisymmetric (servers of two families: each
    comparison in its first operand's family) only the same comparisons in
    the same order give ipvsadm's listing."""
    if len(items) <= 1:
        return list(items)
    half = len(items) // 2
    left, right = merge_sort(items[:half], cmp), merge_sort(items[half:], cmp)
    out, i, j = [], 0, 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    return out + left[i:] + right[j:]


def sort_dests(dests):
    """A service's servers (kernel order: newest first) as ipvsadm lists them."""
    return merge_sort(dests, cmp_dests)


# --- lines ----------------------------------------------------------------------

def title(fmt):
    if fmt & FMT_STATS:
        return ("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"))
    if fmt & FMT_RATE:
        return ("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"))
    if fmt & FMT_THRESHOLDS:
        return ("%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"))
    if fmt & FMT_PERSISTENTCONN:
        return ("%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"))
    if fmt & FMT_TUN_INFO:
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
    if not fmt & FMT_RULE:
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
    return ""


def sched_flags_text(svc):
    out = []
    if svc.sched in ("sh", "mh"):
        if svc.flags & IP_VS_SVC_F_SCHED1:
            out.append(f"{svc.sched}-fallback")
        if svc.flags & IP_VS_SVC_F_SCHED2:
            out.append(f"{svc.sched}-port")
    else:
        for bit, name in ((IP_VS_SVC_F_SCHED1, "flag-1"), (IP_VS_SVC_F_SCHED2, "flag-2"),
                          (IP_VS_SVC_F_SCHED3, "flag-3")):
            if svc.flags & bit:
                out.append(name)
    return ",".join(out)


def _svc_name(svc, fmt, resolver):
    rule = fmt & FMT_RULE
    if svc.fwmark:
        v6 = svc.af == AF_INET6
        if rule:
            return f"-f {svc.fwmark}" + (" -6" if v6 else "")
        return f"FWM  {svc.fwmark}" + (" IPv6" if v6 else "")
    vname = addrport(svc.af, svc.addr, svc.port, svc.proto, fmt, resolver)
    if rule:
        sw = {IPPROTO_TCP: "-t", IPPROTO_UDP: "-u", IPPROTO_SCTP: "--sctp-service"}.get(
            svc.proto, "--xxx-service")
        return f"{sw} {vname}"
    pname = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}.get(svc.proto, "?")
    name = "%-4s %s" % (pname, vname)
    return name if svc.af == AF_INET6 else name[:33]


def _mask_text(svc):
    """' -M x' / ' mask x' payload, or None for the default mask."""
    if svc.af == AF_INET6:
        return None if int(svc.netmask) == 128 else "%d" % int(svc.netmask)
    return None if svc.netmask == "255.255.255.255" else svc.netmask


def _tun_info(d):
    if d.fwd & 7 != IP_VS_CONN_F_TUNNEL:
        return "n/a"
    t = TUN_TYPES.get(d.tun_type, "ipip")
    if t == "gue":
        return f"gue:{d.tun_port}:{TUN_FLAG_NAMES.get(d.tun_flags, '-c')}"
    if t == "gre":
        return f"gre:{TUN_FLAG_NAMES.get(d.tun_flags, '-c')}"
    return t


def _fwd_name(d):
    return FWD_NAMES.get(d.fwd & 7, "(null)")


def service_entry(svc, fmt=0, resolver=None):
    """print_service_entry: the service line and its destinations."""
    name = _svc_name(svc, fmt, resolver)
    out = []
    if fmt & FMT_RULE:
        line = f"-A {name} -s {svc.sched}"
        if svc.persistent:
            line += " -p %d" % svc.timeout
            mask = _mask_text(svc)
            if mask is not None:
                line += f" -M {mask}"
        if svc.pe:
            line += f" --pe {svc.pe}"
        if svc.flags & IP_VS_SVC_F_ONEPACKET:
            line += " -o"
        flags = sched_flags_text(svc)
        if svc.flags & (IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 | IP_VS_SVC_F_SCHED3):
            line += f" -b {flags}"
        if svc.hairpin:
            line += " --hairpin"
        out.append(line + "\n")
        # before the servers: -R refuses a --fullnat server of a service
        # that has no local address yet
        out.extend(laddr_rule(name, la) for la in svc.laddrs)
    elif fmt & FMT_STATS:
        s = svc.stats
        out.append("%-33s" % name + "".join(largenum(v, fmt) for v in s) + "\n")
    elif fmt & FMT_RATE:
        s = svc.rate
        out.append("%-33s" % name + "".join(largenum(v, fmt) for v in s) + "\n")
    else:
        line = f"{name} {svc.sched}"
        if svc.flags & (IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 | IP_VS_SVC_F_SCHED3):
            line += f" ({sched_flags_text(svc)})"
        if svc.persistent:
            line += " persistent %d" % svc.timeout
            mask = _mask_text(svc)
            if mask is not None:
                line += f" mask {mask}"
            if svc.pe:
                line += f" pe {svc.pe}"
        if svc.flags & IP_VS_SVC_F_ONEPACKET:
            line += " ops"
        if svc.hairpin:     # xdplb's, after all of ipvsadm's flags
            line += " hairpin"
        out.append(line + "\n")

    dests = svc.dests if fmt & FMT_NOSORT else sort_dests(svc.dests)
    for d in dests:
        dname = addrport(d.af, d.addr, d.port, svc.proto, fmt, resolver)
        if not fmt & FMT_RULE and d.af != AF_INET6:
            dname = dname[:28]
        if fmt & FMT_RULE:
            line = "-a %s -r %s %s -w %d" % (name, dname, FWD_SWITCH.get(d.fwd & 7, "(null)"),
                                            d.weight)
            if d.fwd & 7 == IP_VS_CONN_F_TUNNEL:
                t = TUN_TYPES.get(d.tun_type, "ipip")
                if t == "gre":
                    line += f" --tun-type gre {TUN_FLAG_SWITCH.get(d.tun_flags, '--tun-nocsum')}"
                elif t == "gue":
                    line += (f" --tun-type gue --tun-port {d.tun_port} "
                             f"{TUN_FLAG_SWITCH.get(d.tun_flags, '--tun-nocsum')}")
                else:
                    line += " --tun-type ipip"
            out.append(line + "\n")
        elif fmt & FMT_STATS:
            out.append("  -> %-28s" % dname + "".join(largenum(v, fmt) for v in d.stats) + "\n")
        elif fmt & FMT_RATE:
            r = d.rate
            out.append("  -> %-28s %8d %8d %8d" % (dname, r.conns, r.inpkts, r.outpkts)
                       + largenum(r.inbytes, fmt) + largenum(r.outbytes, fmt) + "\n")
        elif fmt & FMT_THRESHOLDS:
            out.append("  -> %-28s %-10d %-10d %-10d %-10d\n"
                       % (dname, d.u_threshold, d.l_threshold, d.active, d.inactive))
        elif fmt & FMT_PERSISTENTCONN:
            out.append("  -> %-28s %-9d %-11d %-10d %-10d\n"
                       % (dname, d.weight, d.persist, d.active, d.inactive))
        elif fmt & FMT_TUN_INFO:
            out.append("  -> %-28s %-7s %-13s %-6d %-10d %-10d\n"
                       % (dname, _fwd_name(d), _tun_info(d), d.weight, d.active, d.inactive))
        else:
            out.append("  -> %-28s %-7s %-6d %-10d %-10d\n"
                       % (dname, _fwd_name(d), d.weight, d.active, d.inactive))
    return "".join(out)


def laddr_rule(name, la):
    """-S's line for a local address (DPVS's -P, with -F when it has one)."""
    return f"-P {name} -z {la.addr}" + (f" -F {la.ifname}" if la.ifname else "") + "\n"


LADDR_TITLE = "%-20s %-8s %-20s %-10s %-10s %s\n" % (
    "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS", "IFNAME")


def laddr_listing(services):
    """`-G [-t|-u VIP:PORT]`: DPVS's list_laddrs / list_all_laddrs (the
    title before the first service, none without services; addresses always
    numeric), sorted as -L sorts, and xdplb's IFNAME column after DPVS's."""
    out = []
    for svc in sort_services(services):
        if not out:
            out.append(LADDR_TITLE)
        vname = addrport(svc.af, svc.addr, svc.port, svc.proto, FMT_NUMERIC)
        out.append("%-20s %-8u \n" % (vname, len(svc.laddrs)))
        for la in svc.laddrs:
            out.append("%-20s %-8s %-20s %-10u %-10u" % ("", "", la.addr, la.conflicts, la.conns)
                       + (f" {la.ifname}" if la.ifname else "") + "\n")
    return "".join(out)


def list_all(services, fmt=0, resolver=None):
    """`-L` / `-S`: header (not for -S), title, every service sorted unless --nosort."""
    out = [] if fmt & FMT_RULE else [HEADER]
    if not fmt & FMT_NOSORT:
        services = sort_services(services)
    out.append(title(fmt))
    out.extend(service_entry(s, fmt, resolver) for s in services)
    return "".join(out)


def list_service(svc, fmt=0, resolver=None):
    """`-L -t VIP`: no version header."""
    return title(fmt) + service_entry(svc, fmt, resolver)


def timeout_text(tcp=900, tcpfin=120, udp=300):
    return "Timeout (tcp tcpfin udp): %d %d %d\n" % (tcp, tcpfin, udp)


def conn_listing(conns, fmt=0, resolver=None):
    """`-L -c` from entries (proto name, af, caddr, cport, vaddr, vport, daddr,
    dport, state, expires seconds, pe_name, pe_data[, local]): af is the
    client's and the service's family; the real server is written in its
    own (a mixed-family tunnel's row mixes them, as ipvsadm's does). local:
    a source-NATed connection's (method name, laddr, lport), written after
    IPVS's columns (DPVS writes it as a column of its own before the real
    server's)."""
    out = ["IPVS connection entries\n"]
    if fmt & FMT_PERSISTENTCONN:
        out.append("pro expire %-11s %-18s %-18s %-18s %-16s %s\n"
                   % ("state", "source", "virtual", "destination", "pe name", "pe_data"))
    else:
        out.append("pro expire %-11s %-18s %-18s %s\n"
                   % ("state", "source", "virtual", "destination"))
    for row in conns:
        (pname, af, caddr, cport, vaddr, vport, daddr, dport, state, expires,
         pe_name, pe_data) = row[:12]
        local = row[12] if len(row) > 12 else None
        proto = {"TCP": IPPROTO_TCP, "UDP": IPPROTO_UDP}.get(pname, 0)
        cname = addrport(af, caddr, cport, proto, fmt, resolver)
        vname = addrport(af, vaddr, vport, proto, fmt, resolver)
        dname = addrport(family(daddr), daddr, dport, proto, fmt, resolver)
        exp = "%02d:%02d" % (expires // 60, expires % 60)
        if fmt & FMT_PERSISTENTCONN and pe_name:
            out.append("%-3s %-6s %-11s %-18s %-18s %-16s %-18s %s\n"
                       % (pname, exp, state, cname, vname, dname, pe_name, pe_data))
        elif local:
            out.append("%-3s %-6s %-11s %-18s %-18s %-18s %s %s\n"
                       % (pname, exp, state, cname, vname, dname, local[0],
                          addrport(family(local[1]), local[1], local[2], proto, fmt,
                                   resolver)))
        else:
            out.append("%-3s %-6s %-11s %-18s %-18s %s\n"
                       % (pname, exp, state, cname, vname, dname))
    return "".join(out)
