"""Frame builders for data-path tests (scapy)."""
import socket

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw


def _l3(src, dst, **ip):
    """IPv4 or IPv6 (an address with a colon), as the addresses are."""
    return IPv6(src=src, dst=dst, **ip) if ":" in src else IP(src=src, dst=dst, **ip)


def tcp(src, dst, sport, dport, flags="S", smac="02:00:00:00:01:02",
        dmac="02:00:00:00:01:01", payload=b"", vlan=None, **ip):
    l2 = Ether(src=smac, dst=dmac)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    return l2 / _l3(src, dst, **ip) / TCP(sport=sport, dport=dport, flags=flags,
                                          seq=1000, ack=0 if flags == "S" else 1) / payload


def udp(src, dst, sport, dport, smac="02:00:00:00:01:02", dmac="02:00:00:00:01:01",
        payload=b"x" * 11, chksum=None, vlan=None):
    l2 = Ether(src=smac, dst=dmac)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    u = UDP(sport=sport, dport=dport)
    if chksum is not None:
        u.chksum = chksum
    return l2 / _l3(src, dst) / u / payload


def rebuilt(pkt, changes):
    """An independent expected frame: pkt with {(layer, field): value} changed and
    every checksum recomputed by scapy from scratch (a UDP checksum of 0
    given explicitly in the original is kept)."""
    p = pkt.__class__(bytes(pkt))
    for (layer, field), value in changes.items():
        setattr(p[layer], field, value)
    if IP in p:
        del p[IP].chksum
    if TCP in p:
        del p[TCP].chksum
    if UDP in p and p[UDP].chksum != 0:
        del p[UDP].chksum
    return bytes(p.__class__(bytes(p)))




def _fold(addr):
    """An address as the data path's key holds it, host order: IPv4 as it is,
    IPv6 folded (the XOR of its four 32-bit words)."""
    if ":" not in addr:
        return int.from_bytes(socket.inet_aton(addr), "big")
    b = socket.inet_pton(socket.AF_INET6, addr)
    return int.from_bytes(bytes(b[i] ^ b[4 + i] ^ b[8 + i] ^ b[12 + i] for i in range(4)), "big")


def _ip_layer(frame):
    return frame[IPv6] if IPv6 in frame else frame[IP]


def tun_flow_port(inner):
    """The outer UDP source port xdplb derives from the inner flow (bpf/encap.h
    inner_read): hash_32's multiply of addresses (IPv6 folded), ports and
    protocol, scaled into 32768..60999."""
    ip = _ip_layer(inner)
    l4 = inner[TCP] if TCP in inner else inner[UDP]
    proto = 6 if TCP in inner else 17
    h = (_fold(ip.src) ^ _fold(ip.dst) ^ (l4.sport << 16 | l4.dport) ^ proto) & 0xffffffff
    h = (h * 0x61C88647) & 0xffffffff
    return 32768 + ((h * (61000 - 32768)) >> 32)


def encapsulated(frame, src, dst, smac, dmac, tun_port=None, csum=False):
    """An independent expected frame: frame's IP packet unchanged inside an
    outer header src -> dst, IPv4 or IPv6 as those addresses are (ipip: the
    outer protocol / next header 4 for an inner IPv4 packet, 41 for IPv6; or
    gue to tun_port, GUE proto likewise, with the UDP checksum computed by
    scapy over the whole datagram when csum, else 0). The outer header
    copies the inner one's TOS / traffic class (CE -> ECT(0)) and TTL / hop
    limit; an outer IPv4 header has DF and ID 0 when the inner packet has DF
    or is IPv6, else its ID; an outer IPv6 header no flow label. The L2
    header (and a VLAN tag) kept with the outer family's type, MACs set."""
    p = frame.__class__(bytes(frame))
    ip = _ip_layer(p)
    inner = bytes(ip)
    v6_inner = IPv6 in p
    tos, ttl = (ip.tc, ip.hlim) if v6_inner else (ip.tos, ip.ttl)
    if tos & 3 == 3:
        tos = (tos & ~3) | 2
    proto = 41 if v6_inner else 4
    nxt = proto if tun_port is None else 17
    if ":" in src:
        outer = IPv6(src=src, dst=dst, tc=tos, fl=0, hlim=ttl, nh=nxt)
    else:
        df = 2 if v6_inner else ip.flags & 2
        outer = IP(src=src, dst=dst, tos=tos, ttl=ttl, flags=df,
                   id=0 if df else ip.id, proto=nxt)
    if tun_port is not None:
        u = UDP(sport=tun_flow_port(p), dport=tun_port)
        if not csum:
            u.chksum = 0
        outer = outer / u / Raw(bytes((0, proto, 0, 0)) + inner)
    else:
        outer = outer / Raw(inner)
    etype = 0x86DD if ":" in src else 0x0800
    if Dot1Q in p:
        l2 = Ether(src=smac, dst=dmac, type=p[Ether].type) / Dot1Q(vlan=p[Dot1Q].vlan,
                                                                     type=etype)
    else:
        l2 = Ether(src=smac, dst=dmac, type=etype)
    return bytes(l2 / outer)


def icmp_unreach(frame, code, mtu=0):
    """The ICMP destination unreachable (code; mtu: fragmentation needed's
    next-hop MTU) the balancer answers frame with: back to its sender (MACs
    swapped, a VLAN tag kept), from the address frame was sent to, quoting
    its IP header and first 8 bytes; checksums by scapy."""
    raw = bytes(frame)
    f = frame.__class__(raw)
    ip = f[IP]
    l2len = 18 if Dot1Q in f else 14
    l2 = raw[6:12] + raw[0:6] + raw[12:l2len]
    answer = IP(src=ip.dst, dst=ip.src, tos=(ip.tos & 0x1e) | 0xc0, id=ip.id, ttl=64, flags=0,
                proto=1) / ICMP(type=3, code=code, nexthopmtu=mtu) \
        / Raw(bytes(ip)[:ip.ihl * 4 + 8])
    return l2 + bytes(answer)
