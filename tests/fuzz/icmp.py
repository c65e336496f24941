"""The oracle's ICMP rules (README "ICMP and path MTU"), written from the
specification (IPVS's ip_vs_in_icmp / ip_vs_out_icmp / ip_vs_nat_icmp and
icmp_send), not from the C code:

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
- the data path's own answer to a frame: ICMP destination unreachable from
  the address it was sent to, back to its sender (MACs swapped, a VLAN tag
  kept), quoting its IP header and first 8 bytes; none for a source that is
  not unicast; rate-limited (then dropped untouched).
"""
import collections

from .wire import ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, csum_for, ipv4, residue

ERROR_TYPES = (3, 4, 11)
MAX_MESSAGE = 1480

# A parsed ICMP error: l3 (outer IP offset), tot (outer total length), the
# quoted packet's offset q and its tuple.
IcmpErr = collections.namedtuple("IcmpErr", "l3 tot q src dst sport dport proto")


def icmp_error(f):
    """The IcmpErr the rules above may translate, or None."""
    n = len(f)
    if n < 14:
        return None
    et, l3 = f[12] << 8 | f[13], 14
    if et in (ETH_P_8021Q, ETH_P_8021AD):
        if n < 18:
            return None
        et, l3 = f[16] << 8 | f[17], 18
    if et != ETH_P_IP or n < l3 + 20 or f[l3] != 0x45 or f[l3 + 9] != 1:
        return None
    if (f[l3 + 6] << 8 | f[l3 + 7]) & 0x3FFF:
        return None
    tot = f[l3 + 2] << 8 | f[l3 + 3]
    q = l3 + 28
    if tot < 20 + 8 + 20 + 4 or l3 + tot > n or f[l3 + 20] not in ERROR_TYPES:
        return None
    if f[q] != 0x45 or f[q + 9] not in (6, 17) or (f[q + 6] << 8 | f[q + 7]) & 0x1FFF:
        return None
    e = IcmpErr(l3, tot, q, bytes(f[q + 12:q + 16]), bytes(f[q + 16:q + 20]),
                f[q + 20] << 8 | f[q + 21], f[q + 22] << 8 | f[q + 23], f[q + 9])
    if bytes(f[l3 + 16:l3 + 20]) != e.src:
        return None
    return e


def sound(f, e):
    """The checks before a translation: the outer IP and the ICMP checksums."""
    return not residue(f[e.l3:e.l3 + 20]) and not residue(f[e.l3 + 20:e.l3 + e.tot]) and \
        e.tot - 20 <= MAX_MESSAGE


def translated(f, e, outer_off, quoted_off, port_off, addr, port, macs):
    """f with the outer address at outer_off (12: source, 16: destination), the
    quoted one at quoted_off and the quoted port at port_off (20: source, 22:
    destination, from the quoted header) set to addr:port, checksums as the
    rules say; MACs of the egress (None: unchanged)."""
    out = bytearray(f)
    l3, q = e.l3, e.q
    out[l3 + outer_off:l3 + outer_off + 4] = addr
    out[q + quoted_off:q + quoted_off + 4] = addr
    out[q + port_off:q + port_off + 2] = port.to_bytes(2, "big")
    for start, length, at in ((q, 20, q + 10), (l3, 20, l3 + 10), (l3 + 20, e.tot - 20, l3 + 22)):
        out[at:at + 2] = b"\0\0"
        out[at:at + 2] = csum_for(out[start:start + length]).to_bytes(2, "big")
    if macs is not None:
        out[0:6], out[6:12] = macs[2], macs[1]
    return out


def unicast(addr):
    return addr[0] not in (0, 127) and addr[0] < 224


def answer(f, p, code, mtu):
    """The destination unreachable (code; mtu for fragmentation needed) the
    data path answers frame f (parsed: p) with."""
    ip = bytes(f[p.l3:p.l3 + p.tot])
    tos = (ip[1] & 0x1E) | 0xC0
    icmp = bytearray(bytes((3, code, 0, 0, 0, 0)) + mtu.to_bytes(2, "big") +
                     ip[:p.ihl + 8])
    icmp[2:4] = csum_for(icmp).to_bytes(2, "big")
    hdr = bytearray(ipv4(p.dst, p.src, 1, bytes(icmp), tos=tos, ident=ip[4] << 8 | ip[5]))
    return bytes(f[6:12]) + bytes(f[0:6]) + bytes(f[12:p.l3]) + bytes(hdr)
