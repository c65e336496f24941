"""The frames of the packet benchmark (pkt.py and the rows beside it):
Ethernet/IPv4 or IPv6/TCP by the addresses' family, and an IPv4 ICMP
error quoting one of them, every checksum right; and a Tunnel row's or a
full-NAT row's output read back (decapsulated(), tcp_read()).
"""
import socket
import struct

from .common import csum, mac_bytes

TCP_SYN, TCP_ACK = 0x02, 0x10
FRAME_LEN = 64         # 14 + 20 + 20 bytes of headers, zero padded (the harness copies 64)
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED = 3, 4


def is6(addr):
    return ":" in addr


def hp(addr, port):
    """addr:port as ipvsadm writes it ([addr]:port for IPv6)."""
    return f"[{addr}]:{port}" if is6(addr) else f"{addr}:{port}"


def packed(addr):
    """addr (a string of either family) in network order."""
    return socket.inet_pton(socket.AF_INET6 if is6(addr) else socket.AF_INET, addr)


def ipv4(src, dst, proto, payload, ident=1):
    """An IPv4 header with DF and its checksum, then payload."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                     packed(src), packed(dst))
    return ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + payload


def tcp_frame(src, dst, sport, dport, flags, smac="02:00:00:00:00:aa", dmac="02:00:00:00:00:bb"):
    """An Ethernet/IPv4 (padded to FRAME_LEN) or Ethernet/IPv6 TCP frame,
    the family src's and dst's, with correct checksums."""
    saddr, daddr = packed(src), packed(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1 if flags & TCP_ACK else 0,
                      5 << 4, flags, 64240, 0, 0)
    if is6(src):
        pseudo = saddr + daddr + struct.pack("!IxxxB", len(tcp), socket.IPPROTO_TCP)
    else:
        pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    eth = mac_bytes(dmac) + mac_bytes(smac)
    if is6(src):
        ip6 = struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64) + saddr + daddr
        return eth + struct.pack("!H", ETH_P_IPV6) + ip6 + tcp
    frame = eth + struct.pack("!H", ETH_P_IP) + ipv4(src, dst, socket.IPPROTO_TCP, tcp)
    return frame + bytes(FRAME_LEN - len(frame))


def frag_needed_frame(router, quoted, mtu, smac, dmac):
    """An ICMP "fragmentation needed" (next-hop MTU mtu) from router to the
    source of quoted (an Ethernet/IPv4 frame), quoting its IP header and
    first 8 bytes of TCP, as RFC 792 asks of a router."""
    quote = quoted[14:14 + 20 + 8]
    icmp = struct.pack("!BBHHH", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, mtu) + quote
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    dst = socket.inet_ntoa(quote[12:16])
    return (mac_bytes(dmac) + mac_bytes(smac) + struct.pack("!H", ETH_P_IP)
            + ipv4(router, dst, socket.IPPROTO_ICMP, icmp))


def tcp_read(out):
    """An Ethernet/IPv4/TCP frame read: (source, destination, source port,
    destination port, both checksums right), or None when it is not one."""
    if struct.unpack_from("!H", out, 12)[0] != ETH_P_IP or out[23] != socket.IPPROTO_TCP:
        return None
    ip = out[14:14 + (out[14] & 0xF) * 4]
    tcp = out[14 + len(ip):14 + ip_len(out[14:])]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    sport, dport = struct.unpack_from("!HH", tcp)
    return (socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), sport, dport,
            csum(ip) == 0 and csum(pseudo + tcp) == 0)


def ip_len(packet):
    """The length an IPv4 or IPv6 packet's header gives it (its frame may be padded)."""
    if packet[0] >> 4 == 6:
        return 40 + struct.unpack_from("!H", packet, 4)[0]
    return struct.unpack_from("!H", packet, 2)[0]


def decapsulated(out):
    """An encapsulated Ethernet frame read: (outer family "IPv4" / "IPv6",
    outer IP protocol (next header), outer destination, the UDP destination
    port or None, the packet inside), or None when out is not IP-in-IP or
    GUE over IPv4 or IPv6."""
    kind = struct.unpack_from("!H", out, 12)[0]
    if kind == ETH_P_IPV6:
        family, proto, dst, off = "IPv6", out[20], socket.inet_ntop(
            socket.AF_INET6, out[38:54]), 54
    elif kind == ETH_P_IP:
        family, proto, dst = "IPv4", out[23], socket.inet_ntoa(out[30:34])
        off = 14 + (out[14] & 0xF) * 4
    else:
        return None
    port = None
    if proto == socket.IPPROTO_UDP:      # GUE variant 0: UDP, then a 4-byte header
        port, off = struct.unpack_from("!H", out, off + 2)[0], off + 8 + 4
    elif proto not in (socket.IPPROTO_IPIP, socket.IPPROTO_IPV6):
        return None
    inner = out[off:]
    return family, proto, dst, port, inner[:ip_len(inner)]
