"""Frame builders for data-path tests (scapy)."""
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw


def tcp(src, dst, sport, dport, flags="S", smac="02:00:00:00:01:02",
        dmac="02:00:00:00:01:01", payload=b"", vlan=None, **ip):
    l2 = Ether(src=smac, dst=dmac)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    return l2 / IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport, flags=flags,
                                                 seq=1000, ack=0 if flags == "S" else 1) / payload


def udp(src, dst, sport, dport, smac="02:00:00:00:01:02", dmac="02:00:00:00:01:01",
        payload=b"x" * 11, chksum=None, vlan=None):
    l2 = Ether(src=smac, dst=dmac)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    u = UDP(sport=sport, dport=dport)
    if chksum is not None:
        u.chksum = chksum
    return l2 / IP(src=src, dst=dst) / u / payload


def rebuilt(pkt, changes):
    """An independent expected frame: pkt with {(layer, field): value} changed and
    every checksum recomputed by scapy from scratch (a UDP checksum of 0
    given explicitly in the original is kept)."""
    p = pkt.__class__(bytes(pkt))
    for (layer, field), value in changes.items():
        setattr(p[layer], field, value)
    del p[IP].chksum
    if TCP in p:
        del p[TCP].chksum
    if UDP in p and p[UDP].chksum != 0:
        del p[UDP].chksum
    return bytes(p.__class__(bytes(p)))


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
