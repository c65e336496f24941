"""The oracle's ICMP rules (README "ICMP and path MTU", docs/ipvs-behaviour.md
§13 and §14), written from the specification (IPVS's ip_vs_in_icmp /
ip_vs_out_icmp / ip_vs_nat_icmp, their _v6 twins, and icmp_send /
icmpv6_send), not from the C code:

- an ICMP error (destination unreachable, source quench, time exceeded),
  without IP options, to the source of the IPv4 TCP/UDP packet it quotes
  (its header and ports inside the message; not a later fragment), whose IP
  and ICMP checksums are right and whose message is at most 1,480 bytes, is
  ours when the quoted tuple, reversed, is a tracked connection's: as a
  real server's reply (client -> rs:rport quoted: to the client, the outer
  source and quoted destination become the VIP and its port), else as a
  client's packet (VIP:vport -> client quoted: to the real server, Masq's
  outer destination and quoted source become its address and port); the
  quoted TCP/UDP checksum is left as it was, the quoted IP header's is
  recomputed, the others follow;
- an ICMPv6 error (destination unreachable, packet too big, time exceeded)
  right after the IPv6 header (payload length not 0, inside the frame), to
  the source of the IPv6 TCP/UDP packet it quotes without extension headers
  (header and ports inside the message), whose ICMPv6 checksum (with its
  pseudo-header) is right and whose message is at most 1,480 bytes: the
  same; IPv6 has no header checksums, the ICMPv6 one follows;
- the data path's own answer to a frame: from the address it was sent to,
  back to its sender (MACs swapped, a VLAN tag kept); IPv4: destination
  unreachable (port unreachable, or fragmentation needed with the MTU)
  quoting the IP header and first 8 bytes, none for a source that is not
  unicast; IPv6: port unreachable (type 1 code 4) or packet too big (type
  2, the MTU), hop limit 64, quoting the packet up to 1,232 bytes, none to
  a multicast or unspecified source; rate-limited (then dropped untouched).
"""
import collections

from .wire import (ETH_P_IP, ETH_P_IPV6, NH_ICMPV6, V4, V6, csum_for, ipv4, ipv6, l3_start,
                   pseudo, residue)

ERROR_TYPES = (3, 4, 11)
ERROR_TYPES6 = (1, 2, 3)
MAX_MESSAGE = 1480
QUOTE6_MAX = 1232   # 1280 - 40 - 8: an ICMPv6 answer fits IPv6's minimum MTU

# A parsed ICMP error: l3 (outer IP offset), tot (outer IPv4 total length,
# IPv6's 40 + payload length), the quoted packet's offset q and its tuple
# (whose addresses say the family).
IcmpErr = collections.namedtuple("IcmpErr", "l3 tot q src dst sport dport proto")


def icmp_error(f):
    """The IcmpErr the rules above may translate, or None."""
    h = l3_start(f)
    if h is None:
        return None
    l3, et = h
    e = _icmp4_error(f, l3) if et == ETH_P_IP else _icmp6_error(f, l3) if et == ETH_P_IPV6 \
        else None
    if e is None:
        return None
    dst = l3 + _at(e, "dst")
    return e if bytes(f[dst:dst + len(e.src)]) == e.src else None   # to the quoted source


def _icmp4_error(f, l3):
    n = len(f)
    if n < l3 + 20 or f[l3] != 0x45 or f[l3 + 9] != 1:
        return None
    if (f[l3 + 6] << 8 | f[l3 + 7]) & 0x3FFF:
        return None
    tot = f[l3 + 2] << 8 | f[l3 + 3]
    q = l3 + 28
    if tot < 20 + 8 + 20 + 4 or l3 + tot > n or f[l3 + 20] not in ERROR_TYPES:
        return None
    if f[q] != 0x45 or f[q + 9] not in (6, 17) or (f[q + 6] << 8 | f[q + 7]) & 0x1FFF:
        return None
    return IcmpErr(l3, tot, q, bytes(f[q + 12:q + 16]), bytes(f[q + 16:q + 20]),
                   f[q + 20] << 8 | f[q + 21], f[q + 22] << 8 | f[q + 23], f[q + 9])


def _icmp6_error(f, l3):
    n = len(f)
    if n < l3 + 40 or f[l3] >> 4 != 6 or f[l3 + 6] != NH_ICMPV6:
        return None
    tot = 40 + (f[l3 + 4] << 8 | f[l3 + 5])
    q = l3 + 48
    if tot < 40 + 8 + 40 + 4 or l3 + tot > n or f[l3 + 40] not in ERROR_TYPES6:
        return None
    if f[q] >> 4 != 6 or f[q + 6] not in (6, 17):
        return None
    return IcmpErr(l3, tot, q, bytes(f[q + 8:q + 24]), bytes(f[q + 24:q + 40]),
                   f[q + 40] << 8 | f[q + 41], f[q + 42] << 8 | f[q + 43], f[q + 6])


def _at(e, which):
    """Offset of an address ('src' / 'dst') in an IP header of e's family."""
    src = 12 if len(e.src) == V4 else 8
    return src if which == "src" else src + len(e.src)


def _message(f, e):
    """The ICMP message's offset and the bytes its checksum covers."""
    if len(e.src) == V4:
        return e.l3 + 20, f[e.l3 + 20:e.l3 + e.tot]
    l3 = e.l3
    return l3 + 40, pseudo(f[l3 + 8:l3 + 24], f[l3 + 24:l3 + 40], NH_ICMPV6, e.tot - 40) + \
        f[l3 + 40:l3 + e.tot]


def sound(f, e):
    """The checks before a translation: the outer IP header's checksum
    (IPv4), the ICMP message's, its length."""
    off, covered = _message(f, e)
    if len(e.src) == V4 and residue(f[e.l3:e.l3 + 20]):
        return False
    return not residue(covered) and e.tot - (off - e.l3) <= MAX_MESSAGE


def translated(f, e, toward, addr, port, macs):
    """f sent on towards 'rs' (the outer destination, quoted source address
    and port become addr:port) or 'client' (the outer source, quoted
    destination address and port), checksums as the rules say; MACs of the
    egress (None: unchanged)."""
    out = bytearray(f)
    l3, q, n = e.l3, e.q, len(addr)
    outer, quoted = ("dst", "src") if toward == "rs" else ("src", "dst")
    ports = q + (20 if n == V4 else 40) + (0 if quoted == "src" else 2)
    out[l3 + _at(e, outer):l3 + _at(e, outer) + n] = addr
    out[q + _at(e, quoted):q + _at(e, quoted) + n] = addr
    out[ports:ports + 2] = port.to_bytes(2, "big")
    if n == V4:
        for start, length, at in ((q, 20, q + 10), (l3, 20, l3 + 10)):
            out[at:at + 2] = b"\0\0"
            out[at:at + 2] = csum_for(out[start:start + length]).to_bytes(2, "big")
    off = _message(out, e)[0]
    out[off + 2:off + 4] = b"\0\0"
    out[off + 2:off + 4] = csum_for(_message(out, e)[1]).to_bytes(2, "big")
    if macs is not None:
        out[0:6], out[6:12] = macs[2], macs[1]
    return out


def unicast(addr):
    """May the data path answer addr?"""
    if len(addr) == V6:
        return addr[0] != 0xFF and any(addr)
    return addr[0] not in (0, 127) and addr[0] < 224


def answer(f, p, name, mtu):
    """The answer the data path sends for frame f (parsed: p): 'no_dest'
    (port unreachable) or 'frag_needed' (fragmentation needed / packet too
    big, with mtu)."""
    l2 = bytes(f[6:12]) + bytes(f[0:6]) + bytes(f[12:p.l3])
    ip = bytes(f[p.l3:p.l3 + p.tot])
    if len(p.src) == V6:
        typ, code = (1, 4) if name == "no_dest" else (2, 0)
        icmp = bytearray(bytes((typ, code, 0, 0)) + mtu.to_bytes(4, "big") + ip[:QUOTE6_MAX])
        icmp[2:4] = csum_for(pseudo(p.dst, p.src, NH_ICMPV6, len(icmp)) + icmp).to_bytes(2,
                                                                                       "big")
        return l2 + ipv6(p.dst, p.src, NH_ICMPV6, bytes(icmp))
    code = 3 if name == "no_dest" else 4
    tos = (ip[1] & 0x1E) | 0xC0
    icmp = bytearray(bytes((3, code, 0, 0, 0, 0)) + mtu.to_bytes(2, "big") + ip[:p.ihl + 8])
    icmp[2:4] = csum_for(icmp).to_bytes(2, "big")
    return l2 + ipv4(p.dst, p.src, 1, bytes(icmp), tos=tos, ident=ip[4] << 8 | ip[5])
