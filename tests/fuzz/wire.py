"""Frames on the wire, written from the protocols, independently of the data
path: addresses of the test network, one's-complement checksums, the parser
that decides what README's "How it works" calls ours (IPv4 and IPv6), and
frame builders (plain bytes: scapy is ~100x too slow for 10^6 frames)."""
import ipaddress
import socket
import struct

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = ("ABORTED", "DROP", "PASS", "TX", "REDIRECT")
ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
MTU = 1500
MAX_FRAME = 1600
# A family is named by its address length: a tuple's addresses say which.
V4, V6 = 4, 16
# IPv6 next headers: the extension headers the data path walks over (at
# most EXT_MAX of them: hop-by-hop, routing, destination options), and ICMPv6
NH_HOP, NH_ROUTING, NH_DEST, NH_ICMPV6, NH_FRAGMENT = 0, 43, 60, 58, 44
EXT_WALKED = (NH_HOP, NH_ROUTING, NH_DEST)
EXT_MAX = 4


def a4(s):
    return socket.inet_aton(s)


def a6(s):
    return socket.inet_pton(socket.AF_INET6, s)


def ntop(addr):
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == V6 else socket.AF_INET, addr)


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


class Addrs:
    """One family's addresses in the test network: the client (with a
    neighbour entry, without one, without a route), the real servers (with
    a neighbour entry on srv0, on cli0, without one, without a route),
    three VIPs and the balancer's own address on cli0."""
    __slots__ = ("balancer", "client", "client_no_neigh", "client_no_route", "near_rs", "rs",
                 "rs_no_neigh", "rs_no_route", "vip", "vip2", "vip3")

    def __init__(self, **addrs):
        for name, value in addrs.items():
            setattr(self, name, value)


class Topology:
    """The data-path test network (xdplb/testnet.py: cli0 faces the client,
    srv0 the real servers, permanent neighbours, IPv4 and IPv6 on both) in
    wire bytes, with the addresses the fuzzer adds: two more VIPs, a client
    without a neighbour entry and one without a route, and an IPv6 real
    server without a route. The IPv4 ones are attributes too (net.client)."""

    def __init__(self, net):
        self.cli, self.srv = net["cli_idx"], net["srv_idx"]
        self.cli_mac, self.srv_mac = mac(net["cli_mac"]), mac(net["srv_mac"])
        self.client, self.client_mac = a4(net["client_ip"]), mac(net["client_mac"])
        self.rs = [a4(a) for a, _ in net["rs"]]
        self.rs_mac = {a4(a): mac(m) for a, m in net["rs"]}
        self.rs_mac.update((a6(a), mac(m)) for a, m in net["rs6"])
        self.near_rs = a4(net["near_rs_ip"])
        self.rs_no_neigh, self.rs_no_route = a4(net["rs_no_neigh"]), a4(net["rs_no_route"])
        self.vip, self.vip2, self.vip3 = a4(net["vip"]), a4("10.0.0.101"), a4("10.0.0.102")
        self.client_no_neigh, self.client_no_route = a4("10.0.0.7"), a4("198.51.100.7")
        self.balancer = a4(net["cli_ip"])
        v6 = Addrs(balancer=a6(net["cli_ip6"]), client=a6(net["client_ip6"]),
                   client_no_neigh=a6("fd00:1::7"),
                   client_no_route=a6("2001:db8:100::7"), near_rs=a6(net["near_rs_ip6"]),
                   rs=[a6(a) for a, _ in net["rs6"]], rs_no_neigh=a6(net["rs6_no_neigh"]),
                   rs_no_route=a6("2001:db8:2::1"), vip=a6(net["vip6"]),
                   vip2=a6("fd00:1::101"), vip3=a6("fd00:1::102"))
        self.addrs = {V4: Addrs(**{k: getattr(self, k) for k in Addrs.__slots__}), V6: v6}
        # FIB: permanent neighbours -> (egress ifindex, egress MAC, neighbour MAC)
        self.neigh = {}
        for a in (self.addrs[V4], v6):
            self.neigh[a.client] = (self.cli, self.cli_mac, self.client_mac)
            self.neigh[a.near_rs] = (self.cli, self.cli_mac, mac(net["near_rs_mac"]))
        for addr in self.rs + v6.rs:
            self.neigh[addr] = (self.srv, self.srv_mac, self.rs_mac[addr])
        self.local = {a4(net["cli_ip"]), a4(net["srv_ip"]), a6(net["cli_ip6"]),
                      a6(net["srv_ip6"])}
        # testnet's links: cli0's and srv0's networks
        self.on_link = [ipaddress.ip_network(n) for n in ("10.0.0.0/24", "172.80.0.0/24",
                                                          "fd00:1::/64", "fd00:80::/64")]
        # tun_src: the outer source of Tunnel packets leaving by each interface
        self.tun_src = {self.cli: a4(net["cli_ip"]), self.srv: a4(net["srv_ip"])}

    def ifname(self, ifindex):
        return {self.cli: "cli0", self.srv: "srv0"}.get(ifindex, ifindex)

    def fib(self, target):
        """The FIB's answer for a forward to target: 'ok' (known neighbour),
        'no_neigh' (on-link, unresolved), 'none' (no route, local,
        multicast), None (unsure: an on-link network's first or last
        address (IPv4's network and broadcast, IPv6's subnet-router
        anycast), IPv6 link-local). Every device's MTU is MTU."""
        if target in self.neigh:
            return "ok"
        if target in self.local:
            return "none"
        ip = ipaddress.ip_address(target)
        if ip.version == 6 and ip.is_link_local:
            return None
        for net in self.on_link:
            if ip in net:
                return None if ip in (net.network_address, net.broadcast_address) else "no_neigh"
        return "none"


# --- one's-complement arithmetic, independent of the data path's -----------
# 2**16 == 1 (mod 0xffff), so the one's-complement sum of a byte string's
# 16-bit words is its big-endian integer value modulo 0xffff (with 0 and
# 0xffff the same "zero"). A checksummed region is valid iff that is 0.

def residue(data):
    if len(data) & 1:
        data = bytes(data) + b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def csum_for(data_with_zero_check):
    r = residue(data_with_zero_check)
    return 0xFFFF - r if r else 0


def pseudo(src, dst, proto, length):
    """The TCP/UDP (ICMPv6) checksum's pseudo-header of either family."""
    if len(src) == V6:  # RFC 8200 8.1
        return src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, proto))
    return src + dst + bytes((0, proto)) + (length & 0xFFFF).to_bytes(2, "big")


# --- independent parser: what the README promises is "ours" -----------------

class Parsed:
    """A TCP/UDP packet with ports. ihl: the IP header's length (IPv6: with
    its extension headers), tot: IPv4's total length, IPv6's 40 + payload
    length; src_at / dst_at: the addresses' offsets in the frame."""
    __slots__ = ("dport", "dst", "dst_at", "first_frag", "flags", "ident", "ihl", "key", "l3",
                 "l4", "proto", "sport", "src", "src_at", "tot")


class Later:
    """A later fragment (offset > 0) of TCP or UDP: no L4 header. ihl: the
    IP header's length (IPv6: to the fragment header's end); src_at: the
    source address's offset in the frame (the destination follows)."""
    __slots__ = ("dst", "ident", "ihl", "l3", "offset", "proto", "src", "src_at", "tot")

    def frag_key(self):
        return self.src, self.dst, self.ident, self.proto


def l3_start(f):
    """(offset, EtherType) of the L3 header after at most one 802.1Q /
    802.1ad tag; None if the frame ends first."""
    n = len(f)
    if n < 14:
        return None
    et = f[12] << 8 | f[13]
    if et == ETH_P_8021Q or et == ETH_P_8021AD:
        if n < 18:
            return None
        return 18, f[16] << 8 | f[17]
    return 14, et


def _ipv4(f):
    """(l3, ihl, tot, proto, frag field) of a TCP/UDP IPv4 header (at most
    one 802.1Q / 802.1ad tag) whose total length lies inside the frame; None
    for anything else."""
    n = len(f)
    h = l3_start(f)
    if h is None:
        return None
    l3, et = h
    if et != ETH_P_IP or n < l3 + 20:
        return None
    vihl = f[l3]
    if vihl >> 4 != 4 or vihl & 15 < 5:
        return None
    proto = f[l3 + 9]
    if proto not in (6, 17):
        return None
    ihl = (vihl & 15) * 4
    tot = f[l3 + 2] << 8 | f[l3 + 3]
    if tot < ihl or l3 + tot > n:
        return None
    return l3, ihl, tot, proto, f[l3 + 6] << 8 | f[l3 + 7]


def ipv6_next(f):
    """(l3, tot, next header, its offset, fragment) of an IPv6 frame (at
    most one tag) whose payload length is not 0 (a jumbogram) and lies
    inside the frame, after at most EXT_MAX walked extension headers, each
    inside the payload, then a fragment header if one is next (inside the
    payload; fragment: (its offset field, M, identification), next header
    and offset then those after it); None for anything else (the next
    header is then still an extension header when there are more)."""
    h = l3_start(f)
    if h is None:
        return None
    l3, et = h
    n = len(f)
    if et != ETH_P_IPV6 or n < l3 + 40 or f[l3] >> 4 != 6:
        return None
    tot = 40 + (f[l3 + 4] << 8 | f[l3 + 5])
    if tot == 40 or l3 + tot > n:
        return None
    nh, off, end = f[l3 + 6], l3 + 40, l3 + tot
    for _ in range(EXT_MAX):
        if nh not in EXT_WALKED:
            break
        if off + 2 > end:
            return None
        nh, off = f[off], off + (f[off + 1] + 1) * 8
    frag = None
    if nh == NH_FRAGMENT and off <= end:
        if off + 8 > end:
            return None
        fo = f[off + 2] << 8 | f[off + 3]
        frag = (fo & 0xFFF8, fo & 1, int.from_bytes(f[off + 4:off + 8], "big"))
        nh, off = f[off], off + 8
    if off > end:
        return None
    return l3, tot, nh, off, frag


def source_ok6(src):
    """May an IPv6 client's packet from src (16 bytes) be balanced? Not
    from a multicast, loopback, unspecified or link-local source
    (bpf/parse.h parse_pkt6, as the kernel's ip6_rcv and ip6_forward)."""
    ip = ipaddress.IPv6Address(src)
    return not (ip.is_multicast or ip.is_loopback or ip.is_unspecified or ip.is_link_local)


def _ip(f):
    """(l3, ihl, tot, proto, IPv4's frag field (0 for IPv6), src_at, alen) of
    a TCP/UDP packet of either family, its L4 header not yet checked."""
    h = _ipv4(f)
    if h is not None:
        return (*h, h[0] + 12, V4, None)
    h = ipv6_next(f)
    if h is None or h[2] not in (6, 17):
        return None
    l3, tot, nh, l4, frag = h
    if not source_ok6(bytes(f[l3 + 8:l3 + 24])):
        return None
    # as IPv4's frag field: MF, offset in 8-byte units; an atomic fragment
    # (offset 0, no M) is a whole packet
    bits = 0 if frag is None else (0x2000 if frag[1] else 0) | frag[0] // 8
    return l3, l4 - l3, tot, nh, bits, l3 + 8, V6, frag


def parse(f):
    """A Parsed for a TCP/UDP frame with its ports: IPv4 unfragmented or a
    first fragment (offset 0, MF), or IPv6 after at most EXT_MAX walked
    extension headers (and a fragment header: a first or an atomic
    fragment, TCP/UDP right after it); its IP, TCP and UDP headers inside
    the IP total length (IPv6: payload length), which lies inside the
    frame; None for anything else (a later fragment: parse_later)."""
    h = _ip(f)
    if h is None:
        return None
    l3, ihl, tot, proto, frag, src_at, alen, frag6 = h
    if frag & 0x1FFF:  # a fragment offset
        return None
    l4 = l3 + ihl
    if proto == 6:
        if tot < ihl + 20:
            return None
        doff = (f[l4 + 12] >> 4) * 4
        if doff < 20 or ihl + doff > tot:
            return None
        flags = f[l4 + 13]
    else:
        if tot < ihl + 8:
            return None
        flags = 0
    p = Parsed()
    p.l3, p.ihl, p.tot, p.proto, p.l4, p.flags = l3, ihl, tot, proto, l4, flags
    p.first_frag = bool(frag & 0x2000)
    p.ident = (f[l3 + 4] << 8 | f[l3 + 5]) if alen == V4 else (frag6[2] if frag6 else 0)
    p.src_at, p.dst_at = src_at, src_at + alen
    p.src, p.dst = bytes(f[src_at:src_at + alen]), bytes(f[src_at + alen:src_at + 2 * alen])
    p.sport, p.dport = f[l4] << 8 | f[l4 + 1], f[l4 + 2] << 8 | f[l4 + 3]
    p.key = (p.src, p.dst, p.sport, p.dport, proto)
    return p


def parse_later(f):
    """A Later for a later fragment (offset > 0) of TCP/UDP whose IP header
    and total length lie inside the frame (IPv6: its fragment header after
    at most EXT_MAX walked ones, inside the payload, naming TCP or UDP, from
    a source a client's packet may have); None for anything else."""
    h = _ip(f)
    if h is None or not h[4] & 0x1FFF:
        return None
    q = Later()
    q.l3, q.ihl, q.tot, q.proto, frag, q.src_at, alen, frag6 = h
    q.offset = (frag & 0x1FFF) * 8
    q.ident = (f[q.l3 + 4] << 8 | f[q.l3 + 5]) if alen == V4 else frag6[2]
    q.src = bytes(f[q.src_at:q.src_at + alen])
    q.dst = bytes(f[q.src_at + alen:q.src_at + 2 * alen])
    return q


def l4_region(f, p):
    """(pseudo header + covered bytes) of the TCP/UDP checksum. UDP covers its
    length field's bytes when that is sane, else the IP payload."""
    seg_len = p.tot - p.ihl
    if p.proto == 17:
        ulen = f[p.l4 + 4] << 8 | f[p.l4 + 5]
        if 8 <= ulen <= seg_len:
            seg_len = ulen
    return pseudo(p.src, p.dst, p.proto, seg_len) + bytes(f[p.l4:p.l4 + seg_len])


def l4_check_off(p):
    return p.l4 + (16 if p.proto == 6 else 6)


def ip_header(f, p):
    """The bytes the IP header checksum covers: IPv4's header (options
    included); none for IPv6, which has no header checksum."""
    return f[p.l3:p.l3 + p.ihl] if len(p.src) == V4 else b""


def input_checksums_valid(f, p):
    """IP and L4 checksums valid (a zero UDP checksum counts as valid over
    IPv4; over IPv6 it is not: RFC 8200 8.1)."""
    if residue(ip_header(f, p)):
        return False
    co = l4_check_off(p)
    if p.proto == 17 and f[co] == 0 and f[co + 1] == 0:
        return len(p.src) == V4
    return residue(l4_region(f, p)) == 0


def fix_checksums(f):
    """Recompute the IP and L4 checksums of a frame the parser accepts."""
    p = parse(f)
    if p is None:
        return f
    if len(p.src) == V4:
        f[p.l3 + 10:p.l3 + 12] = b"\0\0"
        f[p.l3 + 10:p.l3 + 12] = csum_for(f[p.l3:p.l3 + p.ihl]).to_bytes(2, "big")
    co = l4_check_off(p)
    f[co:co + 2] = b"\0\0"
    c = csum_for(l4_region(f, p))
    if p.proto == 17 and c == 0:
        c = 0xFFFF
    f[co:co + 2] = c.to_bytes(2, "big")
    return f


# --- frame builders (plain bytes: scapy is ~100x too slow for 10^6 frames) ---

def eth(dst, src, etype, tags=()):
    h = dst + src
    for tpid, tci in tags:
        h += struct.pack("!HH", tpid, tci)
    return h + struct.pack("!H", etype)


def ipv4(src, dst, proto, payload, opts=b"", tos=0, ident=0, frag=0, ttl=64):
    ihl = 5 + len(opts) // 4
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident,
                              frag, ttl, proto, 0, src, dst) + opts)
    h[10:12] = csum_for(h).to_bytes(2, "big")
    return bytes(h) + payload


def ip_frame(dmac, smac, src, dst, proto, l4, tags=()):
    """l4 in a plain IPv4 or IPv6 frame (the addresses say which)."""
    if len(src) == V6:
        return eth(dmac, smac, ETH_P_IPV6, tags) + ipv6(src, dst, proto, l4)
    return eth(dmac, smac, ETH_P_IP, tags) + ipv4(src, dst, proto, l4)


def ipv6(src, dst, nh, payload, exts=b"", tc=0, flow=0, hlim=64):
    """An IPv6 packet: exts (extension headers, their chain ending in nh's
    value already) before payload; nh is the IPv6 header's next header."""
    return struct.pack("!IHBB16s16s", 6 << 28 | tc << 20 | flow, len(exts) + len(payload), nh,
                       hlim, src, dst) + exts + payload


def ext_header(nh, body_len8=0, fill=b""):
    """A hop-by-hop / routing / destination-options header (RFC 8200's
    common layout: next header, length in 8-byte units beyond the first
    8), fill padded with zeros (PadN-free: the receiver judges options)."""
    n = 8 * (body_len8 + 1) - 2
    return bytes((nh, body_len8)) + (fill + b"\0" * n)[:n]


def tcp_seg(src, dst, sport, dport, flags, payload=b"", opts=b"", seq=1000, ack=0, win=65535):
    doff = 5 + len(opts) // 4
    h = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0, 0)
                  + opts + payload)
    h[16:18] = csum_for(pseudo(src, dst, 6, len(h)) + h).to_bytes(2, "big")
    return bytes(h)


def udp_dgram(src, dst, sport, dport, payload=b"", zero_check=False):
    h = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if not zero_check:
        c = csum_for(pseudo(src, dst, 17, len(h)) + h)
        h[6:8] = (c or 0xFFFF).to_bytes(2, "big")
    return bytes(h)



# --- Tunnel: the encapsulation README promises, from the protocols ----------

GUE_V0_IPIP = b"\x00\x04\x00\x00"


def tun_flow_port(key):
    """The outer UDP source port of a flow (README: a hash of the client's
    flow, in 32768..60999, as bpf/encap.h derives it)."""
    src, dst, sport, dport, proto = key
    h = int.from_bytes(src, "big") ^ int.from_bytes(dst, "big") ^ (sport << 16 | dport) ^ proto
    h = (h * 0x61C88647) & 0xFFFFFFFF
    return 32768 + ((h * (61000 - 32768)) >> 32)


def encapsulated(f, p, src, dst, gue_port=None, csum=False, macs=None):
    """f's IPv4 packet (and whatever follows it in the frame) inside an outer
    IPv4 header src -> dst: protocol 4, or UDP to gue_port + GUE variant 0;
    DF, TTL and TOS (CE -> ECT(0)) copied, ID 0 with DF else the inner's.
    The outer UDP checksum is computed from scratch over the whole datagram
    when csum (0 otherwise). macs: (ifindex, smac, dmac) of the egress, or
    None for the frame's own."""
    inner = bytes(f[p.l3:])
    tos, ttl = f[p.l3 + 1], f[p.l3 + 8]
    if tos & 3 == 3:
        tos = (tos & ~3 & 0xFF) | 2
    df = f[p.l3 + 6] & 0x40
    ident = b"\0\0" if df else bytes(f[p.l3 + 4:p.l3 + 6])
    if gue_port is None:
        body, proto = b"", 4
    else:
        ulen = 8 + 4 + p.tot
        udp = bytearray(struct.pack("!HHHH", tun_flow_port(p.key), gue_port, ulen, 0))
        if csum:
            c = csum_for(pseudo(src, dst, 17, ulen) + udp + GUE_V0_IPIP + inner[:p.tot])
            udp[6:8] = (c or 0xFFFF).to_bytes(2, "big")
        body, proto = bytes(udp) + GUE_V0_IPIP, 17
    tot = 20 + len(body) + p.tot
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, tot, 0, 0x4000 if df else 0, ttl,
                              proto, 0, src, dst))
    h[4:6] = ident
    h[10:12] = csum_for(h).to_bytes(2, "big")
    l2 = bytearray(f[:p.l3])
    if macs is not None:
        l2[0:6], l2[6:12] = macs[2], macs[1]
    return bytearray(l2 + h + body + inner)
