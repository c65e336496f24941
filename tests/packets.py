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


GUE_V0_IPIP = b"\x00\x04\x00\x00"   # GUE variant 0: version 0, hlen 0, proto 4, flags 0


def tun_flow_port(inner):
    """The outer UDP source port xdplb derives from the inner flow (bpf/encap.h
    inner_read): hash_32's multiply of addresses, ports and protocol, scaled
    into 32768..60999."""
    ip = inner[IP]
    l4 = ip.payload
    a = int.from_bytes(socket.inet_aton(ip.src), "big") ^ int.from_bytes(
        socket.inet_aton(ip.dst), "big")
    h = (a ^ (l4.sport << 16 | l4.dport) ^ ip.proto) & 0xffffffff
    h = (h * 0x61C88647) & 0xffffffff
    return 32768 + ((h * (61000 - 32768)) >> 32)


def encapsulated(frame, src, dst, smac, dmac, tun_port=None, csum=False):
    """An independent expected frame: frame's IPv4 packet unchanged inside an
    outer IPv4 header src -> dst (ipip, or gue to tun_port with the UDP
    checksum computed by scapy over the whole datagram when csum), the outer
    header copying DF, TTL and the TOS (CE -> ECT(0)) of the inner one, ID 0
    with DF else the inner ID; the L2 header (and a VLAN tag) kept, MACs set."""
    p = frame.__class__(bytes(frame))
    inner = bytes(p[IP])
    tos = p[IP].tos
    if tos & 3 == 3:
        tos = (tos & ~3) | 2
    df = p[IP].flags & 2
    outer = IP(src=src, dst=dst, tos=tos, ttl=p[IP].ttl, flags=df, id=0 if df else p[IP].id,
               proto=4 if tun_port is None else 17)
    if tun_port is not None:
        u = UDP(sport=tun_flow_port(p), dport=tun_port)
        if not csum:
            u.chksum = 0
        outer = outer / u / Raw(GUE_V0_IPIP + inner)
    else:
        outer = outer / Raw(inner)
    l2 = Ether(src=smac, dst=dmac, type=p[Ether].type)
    if Dot1Q in p:
        l2 = l2 / Dot1Q(vlan=p[Dot1Q].vlan, type=0x0800)
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
