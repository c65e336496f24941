"""The frame generator: valid IPv4 and IPv6 frames towards the configured
services and tracked flows (the real servers' replies among them, and
replies that name another real server, port or client than their
connection's; real servers as clients), and mutants of them (truncated, bad
IHL / total / payload / UDP lengths / data offsets, IP options, IPv6
extension-header chains (frames6.py), fragments, VLAN stacks), ICMP and
ICMPv6 errors quoting tracked flows, untracked ones or garbage, other
EtherTypes and random bytes. One seeded random.Random drives it (and the
batch warm-up), so a seed reproduces a run."""
import struct

from xdplb.config import rs_filter_bit

from . import frames6
from .wire import (ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EXT_WALKED,
                   MAX_FRAME, NH_HOP, NH_ICMPV6, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
                   TCP_URG, V4, V6, a4, a6, csum_for, eth, ext_header, fix_checksums, ip_frame,
                   ipv4, ipv6, parse, pseudo, tcp_seg, udp_dgram)

SHARE6 = 0.3    # of the frames not fragments: IPv6 (and ICMPv6)

IP_OPTIONS = [
    b"\x01",                                  # NOP
    b"\x00",                                  # EOL
    b"\x94\x04\x00\x00",                      # router alert
    b"\x07\x07\x04" + b"\0" * 4,              # record route, one slot
    b"\x07\x0b\x04" + b"\0" * 8,              # record route, two slots
    b"\x44\x0c\x05\x00" + b"\0" * 8,          # timestamp
    b"\x83\x07\x04" + a4("172.80.0.2"),       # loose source route
    b"\x89\x07\x04" + a4("172.80.0.3"),       # strict source route
    b"\x86\x06\x00\x00\x00\x00",              # CIPSO-ish
    b"\xff\x02",                              # unknown type
    b"\x07\x00",                              # length 0: malformed
    b"\x07\x28",                              # length past the header
]


def ip_options(rng):
    opts = b"".join(rng.choice(IP_OPTIONS) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.2:
        opts = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
    opts = opts[:40]
    return opts + b"\0" * (-len(opts) % 4)


TCP_OPTIONS = [b"\x02\x04\x05\xb4", b"\x01\x03\x03\x07", b"\x04\x02", b"\x08\x0a" + b"\0" * 8,
               b"\x01", b"\x00", b"\x05\x0a" + b"\0" * 8]


def tcp_options(rng):
    opts = b"".join(rng.choice(TCP_OPTIONS) for _ in range(rng.randint(0, 4)))[:40]
    return opts + b"\0" * (-len(opts) % 4)


TCP_FLAG_CHOICES = [TCP_ACK, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK, TCP_RST, TCP_RST | TCP_ACK,
                    TCP_SYN, TCP_SYN | TCP_ACK, TCP_FIN, 0, TCP_SYN | TCP_FIN,
                    TCP_SYN | TCP_RST, TCP_SYN | TCP_PSH | TCP_URG, 0xFF]


def payload(rng, big=0.01):
    if rng.random() < big:
        n = rng.randint(1300, 1560)
    else:
        n = rng.choice((0, 0, 0, 1, 2, 3, 11, 18, 64, rng.randint(0, 200)))
    return rng.randbytes(n)


def fragments4(rng, src, dst, proto, seg, ident, l2):
    """seg (a TCP or UDP segment) cut as its sender's stack cuts it: frames
    (l2 + IPv4 with MF and offset, data of multiples of 8 bytes but the last)."""
    frames, off = [], 0
    while off < len(seg):
        n = min(len(seg) - off, 8 * rng.choice((1, 2, 3, rng.randint(1, 150))))
        more = 0x2000 if off + n < len(seg) else 0
        frames.append(bytearray(l2 + ipv4(src, dst, proto, seg[off:off + n], ident=ident,
                                          frag=more | off // 8)))
        off += n
    return frames


def filter_twins(bits, n, fam):
    """n client addresses (in 198.18.0.0/15 or 2001:db8:ff::/48, no route)
    whose rs_filter bit is one of bits, a real server's: their every frame
    looks rs_table up, in vain."""
    twins = []
    v = int.from_bytes(a4("198.18.0.0") if fam == V4 else a6("2001:db8:ff::"), "big")
    while len(twins) < n:
        addr = v.to_bytes(fam, "big")
        if rs_filter_bit(addr) in bits:
            twins.append(addr)
        v += 1
    return twins


class FrameGen:
    """Frames for the fuzzer: frame() draws one, (frame, ingress ifindex, kind);
    mutation kinds are counted in kinds as "  +name"."""

    def __init__(self, rng, net, oracle, kinds):
        self.rng, self.net, self.oracle, self.kinds = rng, net, oracle, kinds
        self.filter_twins = {fam: filter_twins(oracle.rs_bits, 4, fam) for fam in (V4, V6)}
        self.pending = []   # later fragments held back, (frame, ingress)
        self.idents = []    # recent IP ids of fragmented datagrams

    def warmup(self):
        """(frame, ingress) opening tracked flows of every service, from clients
        with and without a neighbour entry and without a route."""
        rng, net = self.rng, self.net
        for addr, port, proto in self.oracle.svc_keys:
            a = net.addrs[len(addr)]
            for client in (a.client, a.client, a.client, a.client_no_neigh, a.client_no_route):
                sport, dport = rng.randint(1024, 65535), self._service_port(port)
                if proto == 6:
                    seg = tcp_seg(client, addr, sport, dport, TCP_SYN, opts=b"\x02\x04\x05\xb4")
                else:
                    seg = udp_dgram(client, addr, sport, dport, payload(rng))
                yield bytearray(ip_frame(net.cli_mac, net.client_mac, client, addr, proto, seg)), \
                    net.cli

    def frame(self):
        """(frame, ingress ifindex, kind)."""
        rng = self.rng
        if rng.random() < 0.07:
            return self.gen_frag()
        fam = V6 if rng.random() < SHARE6 else V4
        r = rng.random()
        for bound, kind in ((0.18, "syn_new"), (0.38, "flow_in"), (0.52, "flow_out"),
                            (0.56, "reply_stray"), (0.59, "rs_client"), (0.68, "udp"),
                            (0.8, "other")):
            if r < bound:
                return self.gen_ip(kind, fam)
        if r < 0.88:
            return self.gen_icmp_err(fam)
        if r < 0.94:
            return self.gen_l2()
        return self.gen_random(fam)

    def _client(self, fam):
        a = self.net.addrs[fam]
        r = self.rng.random()
        if r < 0.8:
            return a.client
        if r < 0.87:
            return a.client_no_neigh
        if r < 0.93:
            return a.client_no_route
        if r < 0.96:
            return self.rng.choice(self.filter_twins[fam])
        return self.rng.randbytes(fam)

    def _real_server(self, fam):
        """A real server's address (masquerading ones serve several services)."""
        a = self.net.addrs[fam]
        return self.rng.choice(a.rs + [a.near_rs, a.rs_no_neigh])

    def _service_port(self, port):
        """A destination port for a service of port: any port (now and then
        0, or a real server's) for a port-zero service."""
        if port:
            return port
        rng = self.rng
        return rng.choice((0, 80, 443, 8080, 8053, 53, rng.randint(1, 65535),
                           rng.randint(1, 65535)))

    def _stray(self, src, dst, sport, dport, fam):
        """A reply's tuple with one thing changed, so that rs_table leads to
        a connection that is not its own (or to none): another real server
        on the same port, another source port, another client or client
        port. Mostly not ours."""
        rng, net = self.rng, self.net
        r = rng.random()
        if r < 0.3:
            src = self._real_server(fam)
        elif r < 0.6:
            sport = rng.choice((8080, 8053, 80, 53, 0, rng.randint(0, 65535)))
        elif r < 0.8:
            dport = rng.randint(0, 65535)
        else:
            dst = self._client(fam)
        return src, dst, sport, dport

    def _pick(self, kind, fam):
        """A frame's (kind, src, dst, sport, dport, proto, TCP flags, smac,
        dmac, ingress) for a frame kind of gen_ip's, of family fam."""
        rng, net, a = self.rng, self.net, self.net.addrs[fam]
        flows_in, flows_out = self.oracle.flows_in[fam], self.oracle.flows_out[fam]
        ingress = net.cli
        smac, dmac = net.client_mac, net.cli_mac
        if kind in ("syn_new", "udp", "rs_client"):
            want = 6 if kind == "syn_new" else 17 if kind == "udp" else rng.choice((6, 17))
            keys = [k for k in self.oracle.svc_keys if k[2] == want and len(k[0]) == fam]
            if rng.random() < 0.85:
                dst, dport, _ = rng.choice(keys)
                dport = self._service_port(dport)
            else:
                dst, dport = rng.choice((a.vip, a.vip2, a.vip3, a.balancer)), \
                    rng.choice((80, 53, 443, 8080, rng.randint(0, 65535)))
            proto = want
            if kind == "rs_client":  # from its own port, a real server's, or any
                src, ingress = self._real_server(fam), net.srv
                sport = rng.choice((8080, 8053, 0, rng.randint(0, 65535)))
                smac, dmac = net.rs_mac.get(src, b"\x02\0\0\0\x02\x99"), net.srv_mac
            elif flows_in and rng.random() < 0.1:
                # a tracked client's port again, to another service: two
                # connections behind one real server can then share the
                # reply's tuple, which rs_table's order (newest first) decides
                src, _, sport, _, _ = rng.choice(flows_in)
            else:
                src, sport = self._client(fam), rng.randint(0, 65535)
            flags = TCP_SYN if rng.random() < 0.7 else rng.choice(TCP_FLAG_CHOICES)
        elif kind == "flow_in" and flows_in:
            src, dst, sport, dport, proto = rng.choice(flows_in)
            flags = rng.choice(TCP_FLAG_CHOICES)
        elif kind in ("flow_out", "reply_stray") and flows_out:
            src, dst, sport, dport, proto = rng.choice(flows_out)
            if kind == "reply_stray":
                src, dst, sport, dport = self._stray(src, dst, sport, dport, fam)
            flags = rng.choice(TCP_FLAG_CHOICES)
            ingress = net.srv
            smac, dmac = net.rs_mac.get(src, b"\x02\0\0\0\x02\x99"), net.srv_mac
        else:
            kind = "other"
            src = self._client(fam)
            dst = rng.choice((a.balancer, a.vip, a.rs[0], rng.randbytes(fam)))
            proto = rng.choice((6, 17, 1, 47, 132, 0, 255) if fam == V4 else
                               (6, 17, 58, 58, 47, 132, 0, 50, 59, 255))
            sport, dport = rng.randint(0, 65535), rng.choice((80, 53, 22, rng.randint(0, 65535)))
            flags = rng.choice(TCP_FLAG_CHOICES)
            if rng.random() < 0.3:
                ingress = net.srv
        if rng.random() < 0.05:
            ingress = net.srv if ingress == net.cli else net.cli
        return kind, src, dst, sport, dport, proto, flags, smac, dmac, ingress

    def _l4(self, src, dst, sport, dport, proto, flags, pl):
        rng = self.rng
        if proto == 6:
            return tcp_seg(src, dst, sport, dport, flags, pl, tcp_options(rng) if
                           rng.random() < 0.3 else b"", seq=rng.getrandbits(32),
                           ack=rng.getrandbits(32))
        if proto == 17:
            return udp_dgram(src, dst, sport, dport, pl, zero_check=rng.random() < 0.15)
        if proto in (1, NH_ICMPV6):      # an echo request, or another type
            typ = rng.choice((8, 128, rng.randrange(256)))
            return bytes((typ, 0, 0, 0)) + rng.randbytes(4) + pl
        return pl

    def gen_ip(self, kind, fam):
        kind, src, dst, sport, dport, proto, flags, smac, dmac, ingress = self._pick(kind, fam)
        l4 = self._l4(src, dst, sport, dport, proto, flags, payload(self.rng))
        if fam == V6:
            return self._ipv6_frame(smac, dmac, src, dst, proto, l4), ingress, kind + "6"
        return self._ipv4_frame(smac, dmac, src, dst, proto, l4), ingress, kind

    def gen_frag(self):
        """Fragments of TCP/UDP datagrams of services and tracked flows: a
        first fragment (now and then held back behind its later ones, or
        lost), or one of the later ones held back from earlier datagrams,
        in any order, now and then duplicated, moved into the L4 header,
        truncated or mutated."""
        rng = self.rng
        if self.pending and rng.random() < 0.7:
            f, ingress = self.pending.pop(rng.randrange(len(self.pending)))
            if rng.random() < 0.1:
                self.pending.append((bytearray(f), ingress))
                self.kinds["  +frag-duplicate"] += 1
            return self._frag_mutant(f), ingress, "fragment_later"
        kind = rng.choice(("syn_new", "udp", "flow_in", "flow_in", "flow_out", "other"))
        fam = V6 if rng.random() < SHARE6 else V4
        _, src, dst, sport, dport, proto, flags, smac, dmac, ingress = self._pick(kind, fam)
        proto = proto if proto in (6, 17) else rng.choice((6, 17))
        seg = self._l4(src, dst, sport, dport, proto, flags, rng.randbytes(rng.randint(9, 1200)))
        tags = ((ETH_P_8021Q, 7),) if rng.random() < 0.1 else ()
        if self.idents and rng.random() < 0.1:
            ident = rng.choice(self.idents)  # another datagram with a recent id
        else:
            ident = rng.getrandbits(32)
            self.idents = (self.idents + [ident])[-16:]
        if fam == V6:   # with a fragment header (IPv6's id is 32 bits)
            frames = frames6.fragments(rng, src, dst, proto, seg, ident,
                                       eth(dmac, smac, ETH_P_IPV6, tags))
        else:
            frames = fragments4(rng, src, dst, proto, seg, ident & 0xFFFF,
                                eth(dmac, smac, ETH_P_IP, tags))
        first, later = frames[0], [(f, ingress) for f in frames[1:]]
        r = rng.random()
        if r < 0.1:
            self.kinds["  +frag-first-lost"] += 1
            first = None
        elif r < 0.2:
            self.kinds["  +frag-first-late"] += 1
            later.append((first, ingress))
            first = None
        self.pending = (self.pending + later)[-16:]
        if first is None:
            return self.gen_frag()
        return first, ingress, "fragment_first" + ("6" if fam == V6 else "")

    def _frag_mutant(self, f):
        """A later fragment, now and then starting inside the L4 header,
        truncated or mutated."""
        rng = self.rng
        r = rng.random()
        l3 = 18 if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
        if r < 0.1 and frames6.overlap(rng, f):
            self.kinds["  +frag-overlap6"] += 1
        elif r < 0.1 and len(f) >= l3 + 20 and f[l3] >> 4 == 4:
            f[l3 + 6] &= 0xE0
            f[l3 + 7] = rng.randint(1, 7)  # offset 8..56 bytes
            f[l3 + 10:l3 + 12] = b"\0\0"
            f[l3 + 10:l3 + 12] = csum_for(f[l3:l3 + (f[l3] & 15) * 4]).to_bytes(2, "big")
            self.kinds["  +frag-overlap"] += 1
        elif r < 0.15:
            del f[rng.randint(14, len(f) - 1):]
            self.kinds["  +frag-truncated"] += 1
        elif r < 0.2:
            self.mutate(f, l3)
            self.kinds["  +mutated"] += 1
        return f

    def _ipv4_frame(self, smac, dmac, src, dst, proto, l4):
        """l4 in an IPv4 frame, with options, VLAN tags, fragment bits,
        padding and mutations drawn (and counted in kinds)."""
        rng = self.rng
        opts, frag, tos = b"", 0, 0
        mods = []
        if rng.random() < 0.15:
            opts = ip_options(rng)
            mods.append("ipopts")
        if rng.random() < 0.1:
            tos = rng.getrandbits(8)
        tags = self._tags(mods)
        r = rng.random()
        if r < 0.06:
            frag = rng.choice((0x2000, 0x2000 | rng.randint(1, 0x1FFF), rng.randint(1, 0x1FFF),
                               0x4000 | rng.randint(1, 0x1FFF), 0x6000))
            mods.append("fragment")
        elif r < 0.2:
            frag = 0x4000  # DF: not a fragment
        f = bytearray(eth(dmac, smac, ETH_P_IP, tags) +
                      ipv4(src, dst, proto, l4, opts, tos, rng.getrandbits(16), frag,
                           rng.choice((64, 1, 0, 255))))
        return self._finish(f, 14 + 4 * len(tags), mods)

    def _ipv6_frame(self, smac, dmac, src, dst, proto, l4):
        """l4 in an IPv6 frame, with extension-header chains (frames6.py),
        traffic class, flow label, VLAN tags, a wrong payload length,
        padding and mutations drawn (and counted in kinds)."""
        rng = self.rng
        mods = []
        nh, body, chain = frames6.ext_chain(rng, proto, l4)
        if chain:
            mods.append(chain)
        tags = self._tags(mods)
        tc = rng.getrandbits(8) if rng.random() < 0.1 else 0
        flow = rng.getrandbits(20) if rng.random() < 0.3 else 0
        f = bytearray(eth(dmac, smac, ETH_P_IPV6, tags) +
                      ipv6(src, dst, nh, body, tc=tc, flow=flow, hlim=rng.choice((64, 1, 0, 255))))
        l3 = 14 + 4 * len(tags)
        if rng.random() < 0.06:
            frames6.payload_length_wrong(rng, f, l3)
            mods.append("payload-length-wrong")
        return self._finish(f, l3, mods)

    def _tags(self, mods):
        """VLAN tags: mostly none, one (ours), or a stack (not ours)."""
        rng = self.rng
        r = rng.random()
        if r < 0.18:
            mods.append("vlan")
            return ((rng.choice((ETH_P_8021Q, ETH_P_8021AD)), rng.getrandbits(16)),)
        if r < 0.26:
            mods.append("vlan-stack")
            return tuple((rng.choice((ETH_P_8021Q, ETH_P_8021AD, rng.getrandbits(16))),
                          rng.getrandbits(16)) for _ in range(rng.randint(2, 4)))
        return ()

    def _finish(self, f, l3, mods):
        """Frame f (its L3 header at l3) with padding and mutations drawn,
        at most MAX_FRAME bytes; its mutation kinds counted."""
        rng = self.rng
        if rng.random() < 0.08:
            f += rng.choice((b"\0" * rng.randint(1, 20), rng.randbytes(rng.randint(1, 40))))
            mods.append("padding")
        if rng.random() < 0.35:
            self.mutate(f, l3)
            mods.append("mutated")
        if len(f) > MAX_FRAME:
            del f[MAX_FRAME:]
        for m in mods:
            self.kinds[f"  +{m}"] += 1
        return f

    def mutate(self, f, l3):
        """Mutations of the frame's bytes and of its L3 family's fields (an
        IPv6 EtherType's: frames6.mutate6_field)."""
        rng = self.rng
        v6 = bytes(f[l3 - 2:l3]) == ETH_P_IPV6.to_bytes(2, "big")
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            op = rng.randrange(12)
            n = len(f)
            if v6 and op not in (0, 1, 2, 8, 9, 10):
                frames6.mutate6_field(rng, f, l3, op % 5)
            elif op == 0:  # bit flips, mostly in the headers
                for _ in range(rng.randint(1, 4)):
                    i = rng.randrange(min(n, 80)) if rng.random() < 0.8 else rng.randrange(n)
                    f[i] ^= 1 << rng.randrange(8)
            elif op == 1:  # an interesting byte value
                i = rng.randrange(min(n, 80))
                f[i] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01, 0x45, 0x40, 0x4F, 0x60, 0x3A))
            elif op == 2:  # truncation
                del f[rng.randint(14, n - 1) if n > 15 else n:]
            elif op == 3 and n > l3:  # IHL
                f[l3] = (f[l3] & 0xF0) | rng.randrange(16)
            elif op == 4 and n > l3 + 3:  # IP total length
                ihl = (f[l3] & 15) * 4
                tot = f[l3 + 2] << 8 | f[l3 + 3]
                v = rng.choice((0, 1, ihl - 1, ihl, ihl + 7, ihl + 8, ihl + 19, ihl + 20,
                                ihl + 21, tot - 1, tot + 1, n - l3, n - l3 - 1, n - l3 + 1,
                                0xFFFF, rng.randrange(0x10000)))
                f[l3 + 2:l3 + 4] = (v & 0xFFFF).to_bytes(2, "big")
            elif op == 5 and n > l3 + 20:  # L4 length / data offset
                ihl = (f[l3] & 15) * 4
                i = l3 + ihl
                if f[l3 + 9] == 17 and n > i + 5:
                    f[i + 4:i + 6] = rng.choice((0, 7, 8, 9, 0xFFFF, rng.randrange(0x10000))
                                                ).to_bytes(2, "big")
                elif n > i + 12:
                    f[i + 12] = rng.randrange(16) << 4 | (f[i + 12] & 15)
            elif op == 6 and n > l3 + 7:  # fragment bits
                f[l3 + 6:l3 + 8] = rng.choice((0x2000, 0x0001, 0x1FFF, 0x4000, 0x8000,
                                               rng.randrange(0x10000))).to_bytes(2, "big")
            elif op == 7 and n > l3 + 9:  # protocol / version
                if rng.random() < 0.5:
                    f[l3 + 9] = rng.choice((6, 17, 1, 41, 4, 0, 255, rng.randrange(256)))
                else:
                    f[l3] = rng.randrange(16) << 4 | (f[l3] & 15)
            elif op == 8:  # EtherType / tag
                i = l3 - 2
                f[i:i + 2] = rng.choice((ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD,
                                         ETH_P_ARP, rng.randrange(0x10000))).to_bytes(2, "big")
            elif op == 9:  # insert bytes
                i = rng.randrange(12, n + 1)
                f[i:i] = rng.randbytes(rng.choice((1, 2, 4, 8, rng.randint(1, 40))))
            elif op == 10 and n > 16:  # delete bytes
                i = rng.randrange(12, n - 1)
                del f[i:i + rng.randint(1, min(40, n - i - 1))]
            elif op == 11:  # IP option bytes inserted without fixing IHL / length
                i = min(l3 + 20, n)
                f[i:i] = ip_options(rng)
        if len(f) < 14:
            f.extend(b"\0" * (14 - len(f)))
        if rng.random() < 0.5:
            fix_checksums(f)

    def gen_icmp_err(self, fam):
        """ICMP errors (fam V6: ICMPv6) quoting a tracked flow's packet as the
        other party sent it (translated: a reply VIP -> client from the
        client's side, a client's packet client -> rs from the real servers'
        side) or as it is, an untracked flow's, garbage, or a truncated
        quote, to the quoted source or not; ICMPv6 now and then after an
        extension header, or quoting one (neither is translated)."""
        rng, net, a = self.rng, self.net, self.net.addrs[fam]
        flows = self.oracle.flows_in[fam] + self.oracle.flows_out[fam]
        dst = rng.choice((a.vip, a.vip2, a.client, a.rs[1]))
        ingress = rng.choice((net.cli, net.srv))
        r = rng.random()
        if flows and r < 0.75:
            s, d, sp, dp, proto = rng.choice(flows)
            if rng.random() < 0.7:      # the packet the flow's other end sent
                s, d, sp, dp = d, s, dp, sp
                ingress = net.cli if (s, d, sp, dp, proto) in self.oracle.conns or \
                    (d, s, dp, sp, proto) in self.oracle.conns else net.srv
            if r < 0.08:                # an untracked flow's
                sp, dp = (sp, rng.randint(0, 65535)) if rng.random() < 0.5 else \
                    (rng.randint(0, 65535), dp)
                self.kinds["  +icmp-untracked"] += 1
            if rng.random() < 0.8:
                dst = s                 # errors go to the quoted source
            inner = self._quoted(s, d, proto, struct.pack("!HH", sp, dp) + rng.randbytes(
                rng.choice((4, 4, 16, 500, 1500))))
        else:
            inner = rng.randbytes(rng.randint(0, 60 if fam == V4 else 100))
        router = a4("10.0.0.254") if fam == V4 else a6("fd00:1::fe")
        src = rng.choice((a.rs[0], router, a.client, rng.randbytes(fam)))
        tags = ((ETH_P_8021Q, 5),) if rng.random() < 0.15 else ()
        f = bytearray(eth(net.cli_mac, net.client_mac, ETH_P_IP if fam == V4 else ETH_P_IPV6,
                          tags) + self._icmp_packet(src, dst, inner))
        if rng.random() < 0.25:
            self.mutate(f, 14 + 4 * len(tags))
        if len(f) > MAX_FRAME:
            del f[MAX_FRAME:]
        return f, ingress, "icmp_err" if fam == V4 else "icmp6_err"

    def _quoted(self, s, d, proto, l4):
        """The packet an error quotes (l4: its ports and more), cut short now
        and then; IPv4's as a fragment or not, IPv6's with an extension
        header now and then."""
        rng = self.rng
        if len(s) == V4:
            inner = ipv4(s, d, proto, l4, frag=rng.choice((0x4000, 0x4000, 0, 0x2000, 0x0010)))
            cuts = (20, 24, 28, 48, 556)
        else:
            exts, nh = b"", proto
            if rng.random() < 0.1:
                exts, nh = ext_header(proto, 0), rng.choice(EXT_WALKED)
                self.kinds["  +icmp6-quoting-an-extension-header"] += 1
            inner = ipv6(s, d, nh, l4, exts)
            cuts = (40, 44, 48, 88, 1232)
        return inner[:rng.choice((len(inner), len(inner), *cuts, rng.randint(0, len(inner))))]

    def _icmp_packet(self, src, dst, inner):
        """An ICMP (IPv6 addresses: ICMPv6) message quoting inner, in its IP
        packet src -> dst; its type mostly an error's."""
        rng = self.rng
        if len(src) == V4:
            typ, code = rng.choice(((3, 0), (3, 1), (3, 3), (3, 4), (3, 4), (11, 0), (12, 0),
                                    (5, 1), (4, 0), (rng.randrange(256), rng.randrange(256))))
            icmp = bytearray(struct.pack("!BBHI", typ, code, 0, 1500 if code == 4 else 0) + inner)
            icmp[2:4] = csum_for(icmp).to_bytes(2, "big")
            return ipv4(src, dst, 1, bytes(icmp))
        typ, code = rng.choice(((1, 0), (1, 1), (1, 3), (1, 4), (1, 4), (2, 0), (2, 0), (3, 0),
                                (3, 1), (4, 0), (128, 0), (135, 0),
                                (rng.randrange(256), rng.randrange(256))))
        info = rng.choice((1280, 1400, 1500, 0)) if typ == 2 else 0
        icmp = bytearray(struct.pack("!BBHI", typ, code, 0, info) + inner)
        icmp[2:4] = csum_for(pseudo(src, dst, NH_ICMPV6, len(icmp)) + icmp).to_bytes(2, "big")
        if rng.random() < 0.05:
            self.kinds["  +icmp6-after-an-extension-header"] += 1
            return ipv6(src, dst, NH_HOP, bytes(icmp), ext_header(NH_ICMPV6, 0))
        return ipv6(src, dst, NH_ICMPV6, bytes(icmp))

    def gen_l2(self):
        rng, net = self.rng, self.net
        r = rng.random()
        if r < 0.3:  # ARP
            body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, net.client_mac,
                               net.client, b"\0" * 6, net.vip)
            f = eth(b"\xff" * 6, net.client_mac, ETH_P_ARP) + body
        elif r < 0.6:  # a VLAN stack whose innermost frame is ours-looking
            tags = tuple((rng.choice((ETH_P_8021Q, ETH_P_8021AD)), rng.getrandbits(16))
                         for _ in range(rng.randint(2, 5)))
            seg = tcp_seg(net.client, net.vip, rng.randint(1024, 65535), 80, TCP_SYN)
            f = eth(net.cli_mac, net.client_mac, ETH_P_IP, tags) + ipv4(net.client, net.vip,
                                                                        6, seg)
        else:  # other EtherTypes (LLDP, MPLS, PPPoE, 802.3 length) with IPv4 inside
            et = rng.choice((0x88CC, 0x8847, 0x8864, 0x0600, 0x002E, 0x9100,
                             rng.randrange(0x10000)))
            seg = tcp_seg(net.client, net.vip, 1234, 80, TCP_SYN)
            f = eth(net.cli_mac, net.client_mac, et) + ipv4(net.client, net.vip, 6, seg)
        f = bytearray(f)
        if rng.random() < 0.2:
            self.mutate(f, 14)
        return f, net.cli, "l2_other"

    def gen_random(self, fam):
        """Random bytes, half of them made to look like an IPv4 (fam V6: IPv6)
        header, now and then of a TCP/UDP packet to a VIP."""
        rng, net, a = self.rng, self.net, self.net.addrs[fam]
        n = rng.choice((14, 15, 18, 33, 34, 37, 38, 42, 54, 60, 64, rng.randint(14, 200),
                        rng.randint(14, MAX_FRAME)))
        f = bytearray(rng.randbytes(n))
        # (the IP header's length, its next header's and destination's offsets)
        hl, nh_at, dst_at = (20, 23, 30) if fam == V4 else (40, 20, 38)
        if rng.random() < 0.5 and n >= 16:  # get past the first checks
            f[12:14] = (ETH_P_IP if fam == V4 else ETH_P_IPV6).to_bytes(2, "big")
            f[14] = (0x40 if fam == V4 else 0x60) | (f[14] & 15)
            if rng.random() < 0.5 and n >= 14 + hl:
                if fam == V4:
                    f[14] = 0x45
                    f[16:18] = (n - 14).to_bytes(2, "big")
                    f[20:22] = b"\0\0"
                else:
                    f[18:20] = (n - 14 - hl).to_bytes(2, "big")
                f[nh_at] = rng.choice((6, 17)) if fam == V4 or rng.random() < 0.8 else \
                    rng.choice(EXT_WALKED + (NH_ICMPV6,))
                if rng.random() < 0.3:
                    f[dst_at:dst_at + fam] = rng.choice((a.vip, a.vip2))
                    l4 = 14 + hl
                    if n > l4 + 4:
                        f[l4 + 2:l4 + 4] = rng.choice((80, 53, 5000)).to_bytes(2, "big")
                        f[l4 + 13:l4 + 14] = bytes((TCP_SYN,)) if n > l4 + 13 else b""
                    if rng.random() < 0.5:
                        fix_checksums(f)
        return f, rng.choice((net.cli, net.srv)), "random" if fam == V4 else "random6"

    def template(self, fam):
        """A frame of ours of family fam, for a truncation sweep."""
        rng, net, a = self.rng, self.net, self.net.addrs[fam]
        for _ in range(50):
            f, ingress, _ = self.gen_ip(rng.choice(("syn_new", "flow_in", "flow_out", "udp")), fam)
            if parse(f) is not None and len(f) <= 200:
                return f, ingress
        seg = tcp_seg(a.client, a.vip, 1234, 80, TCP_SYN)
        return bytearray(ip_frame(net.cli_mac, net.client_mac, a.client, a.vip, 6, seg)), net.cli
