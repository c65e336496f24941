"""Packet fuzzing of the XDP data path through BPF_PROG_TEST_RUN (issue 6).

    python -m xdplb.fuzz --frames 1000000 [--seed N] [--batch N]

runs the real program (bpf/xdplb.c, compiled and pinned in a private folder)
in a private network namespace with permanent neighbours, with Masq, Route,
Tunnel, drop-only and dest-gone services and tracked NAT and DR flows
configured, and feeds it random and mutated frames: valid ones and ones
truncated at every offset, with bad IHL / total / UDP lengths / data offsets,
IP options, fragments, VLAN stacks, IPv6 extension headers, ICMP errors
quoting tracked flows or garbage, and random bytes.

An oracle written from the specification (README "How it works"), not from
the C code, decides for every frame what must happen:

- never XDP_ABORTED;
- a frame that is not ours (not a well-formed, unfragmented IPv4 TCP/UDP
  frame with at most one VLAN tag, or neither a tracked flow nor a SYN / UDP
  datagram to a virtual service) leaves with XDP_PASS, byte-identical, and
  creates no connection entry;
- a frame of ours leaves TX / REDIRECT (rewritten: MACs of the egress, plus
  Masq's address and port), PASS (NATed for the stack when the neighbour is
  unknown, or untouched when there is no route) or DROP (untouched, only for
  a service without an available destination or a flow whose destination is
  gone); only the fields NAT / DR may change differ, and the IP and TCP/UDP
  checksums, verified from scratch with an independent one's-complement
  sum, are valid whenever they were valid on input (an input error is
  carried, never laundered; a zero UDP checksum stays zero and a non-zero
  one never becomes zero);
- new connections get exactly the ring's next destination, and the oracle's
  model of the connection table equals the kernel's map after every batch;
  the program's own counters agree with the verdicts.

The short run is tests/test_fuzz.py (make test); the long one `make fuzz`.
"""
import argparse
import collections
import ctypes as C
import errno
import os
import random
import socket
import struct
import sys
import time

from . import bpfsys
from . import structs as S
from . import testnet

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = ("ABORTED", "DROP", "PASS", "TX", "REDIRECT")
ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
MTU = 1500
MAX_FRAME = 1600

TOPO = testnet.TOPO


def a4(s):
    return socket.inet_aton(s)


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


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
    return src + dst + bytes((0, proto)) + (length & 0xFFFF).to_bytes(2, "big")


# --- independent parser: what the README promises is "ours" -----------------

class Parsed:
    __slots__ = ("dport", "dst", "flags", "ihl", "key", "l3", "l4", "proto", "sport", "src",
                 "tot")


def parse(f):
    """A Parsed for an unfragmented IPv4 TCP/UDP frame (at most one 802.1Q /
    802.1ad tag) whose IP, TCP and UDP headers lie inside the IP total length,
    which lies inside the frame; None for anything else."""
    n = len(f)
    if n < 14:
        return None
    et = f[12] << 8 | f[13]
    l3 = 14
    if et == ETH_P_8021Q or et == ETH_P_8021AD:
        if n < 18:
            return None
        et = f[16] << 8 | f[17]
        l3 = 18
    if et != ETH_P_IP or n < l3 + 20:
        return None
    vihl = f[l3]
    if vihl >> 4 != 4 or vihl & 15 < 5:
        return None
    if (f[l3 + 6] << 8 | f[l3 + 7]) & 0x3FFF:  # MF or a fragment offset
        return None
    ihl = (vihl & 15) * 4
    tot = f[l3 + 2] << 8 | f[l3 + 3]
    if tot < ihl or l3 + tot > n:
        return None
    proto = f[l3 + 9]
    l4 = l3 + ihl
    if proto == 6:
        if tot < ihl + 20:
            return None
        doff = (f[l4 + 12] >> 4) * 4
        if doff < 20 or ihl + doff > tot:
            return None
        flags = f[l4 + 13]
    elif proto == 17:
        if tot < ihl + 8:
            return None
        flags = 0
    else:
        return None
    p = Parsed()
    p.l3, p.ihl, p.tot, p.proto, p.l4, p.flags = l3, ihl, tot, proto, l4, flags
    p.src, p.dst = bytes(f[l3 + 12:l3 + 16]), bytes(f[l3 + 16:l3 + 20])
    p.sport, p.dport = f[l4] << 8 | f[l4 + 1], f[l4 + 2] << 8 | f[l4 + 3]
    p.key = (p.src, p.dst, p.sport, p.dport, proto)
    return p


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


def input_checksums_valid(f, p):
    """IP and L4 checksums valid (a zero UDP checksum counts as valid)."""
    if residue(f[p.l3:p.l3 + p.ihl]):
        return False
    co = l4_check_off(p)
    if p.proto == 17 and f[co] == 0 and f[co + 1] == 0:
        return True
    return residue(l4_region(f, p)) == 0


def fix_checksums(f):
    """Recompute the IP and L4 checksums of a frame the parser accepts."""
    p = parse(f)
    if p is None:
        return f
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


# --- the fuzz environment ----------------------------------------------------

Svc = collections.namedtuple("Svc", "slot addr port proto ring")
MConn = collections.namedtuple("MConn", "addr port dir fwd dest_slot svc_slot")


class MDest:
    __slots__ = ("addr", "available", "fwd", "port", "slot", "svc_slot")

    def __init__(self, slot, addr, port, fwd, svc_slot, available=True):
        self.slot, self.addr, self.port, self.fwd = slot, addr, port, fwd
        self.svc_slot, self.available = svc_slot, available


class Runner:
    """BPF_PROG_TEST_RUN with buffers allocated once (ctypes per call costs
    more than the run itself)."""

    def __init__(self, prog_fd):
        self.fd = prog_fd
        self.lib = C.CDLL("libbpf.so.1", use_errno=True)
        self.fn = self.lib.bpf_prog_test_run_opts
        self.fn.argtypes = [C.c_int, C.c_void_p]
        self.fn.restype = C.c_int
        self.buf_in = C.create_string_buffer(4096)
        self.buf_out = C.create_string_buffer(4096 + 512)
        self.ctx = bpfsys.XdpMd()
        self.opts = bpfsys.BpfTestRunOpts(
            sz=C.sizeof(bpfsys.BpfTestRunOpts), data_in=C.addressof(self.buf_in),
            data_out=C.addressof(self.buf_out), ctx_in=C.addressof(self.ctx),
            ctx_size_in=C.sizeof(self.ctx), repeat=1)
        self.popts = C.byref(self.opts)

    def run(self, data, ifindex):
        """(verdict, frame out); OSError from the kernel is raised."""
        n = len(data)
        C.memmove(self.buf_in, bytes(data), n)
        o, x = self.opts, self.ctx
        o.data_size_in, o.data_size_out, o.retval = n, 4096 + 512, 0xDEAD
        x.data_end, x.ingress_ifindex = n, ifindex
        ret = self.fn(self.fd, self.popts)
        if ret < 0:
            err = -ret if ret != -1 else C.get_errno()
            raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
        return o.retval, C.string_at(self.buf_out, o.data_size_out)


class Fuzzer:
    """Configures services in the pinned maps, generates frames, runs them
    and checks every verdict and output against the oracle."""

    # dest slot -> (address, port (None = the service's), fwd); service config below
    def __init__(self, state, net, seed=1, batch=4096, log=None, max_violations=20):
        self.s, self.net = state, net
        self.rng = random.Random(seed)
        self.seed = seed
        self.batch = batch
        self.log = log or (lambda msg: None)
        self.max_violations = max_violations
        self.runner = Runner(state.prog_fd)
        self.cli, self.srv = net["cli_idx"], net["srv_idx"]
        self.cli_mac, self.srv_mac = mac(net["cli_mac"]), mac(net["srv_mac"])
        self.client, self.client_mac = a4(net["client_ip"]), mac(net["client_mac"])
        # FIB model: permanent neighbours -> (egress ifindex, egress MAC, neighbour MAC)
        self.neigh = {a4(net["client_ip"]): (self.cli, self.cli_mac, mac(net["client_mac"])),
                      a4(net["near_rs_ip"]): (self.cli, self.cli_mac, mac(net["near_rs_mac"]))}
        for addr, m in net["rs"]:
            self.neigh[a4(addr)] = (self.srv, self.srv_mac, mac(m))
        self.local = {a4(net["cli_ip"]), a4(net["srv_ip"])}
        self.rs = [a4(a) for a, _ in net["rs"]]
        self.rs_mac = {a4(a): mac(m) for a, m in net["rs"]}
        self.vip = a4(net["vip"])
        self.vip2 = a4("10.0.0.101")
        self.vip3 = a4("10.0.0.102")
        self.client_no_neigh = a4("10.0.0.7")
        self.client_no_route = a4("198.51.100.7")
        self._config()
        self.stats = collections.Counter()
        self.kinds = collections.Counter()
        self.outcomes = collections.Counter()
        self.violations = []
        self.frames = 0
        self.batches = 0
        self.in_batch = 0
        self.batch_expect = collections.Counter()

    # -- configuration ------------------------------------------------------

    def _config(self):
        M, D, T = S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE, S.IP_VS_CONN_F_TUNNEL
        rs, vip, vip2, vip3 = self.rs, self.vip, self.vip2, self.vip3
        near, no_neigh, no_route = (a4(self.net["near_rs_ip"]), a4(self.net["rs_no_neigh"]),
                                    a4(self.net["rs_no_route"]))
        # slot: (addr, port, proto, [(dest slot, addr, port, fwd)])
        self.config = {
            1: (vip, 80, 6, [(1, rs[0], 8080, M), (2, rs[1], 8080, M), (3, rs[2], 8080, M)]),
            2: (vip, 53, 17, [(4, rs[0], 8053, M), (5, rs[1], 8053, M)]),
            3: (vip2, 80, 6, [(6, rs[1], 80, D), (7, rs[2], 80, D)]),
            4: (vip2, 5000, 17, [(8, rs[2], 5000, D)]),
            5: (vip, 443, 6, [(9, near, 8443, M)]),
            6: (vip, 8000, 6, [(10, no_neigh, 8080, M), (11, no_route, 8080, M)]),
            7: (vip, 9000, 6, []),
            8: (vip3, 80, 6, [(12, rs[0], 8080, M)]),
            9: (vip3, 53, 17, [(13, rs[1], 53, T)]),
            10: (vip2, 8000, 6, [(14, no_neigh, 8000, D), (15, no_route, 8000, D)]),
        }
        self.services = {}
        self.dests = {}
        self.svc_keys = []
        for slot, (addr, port, proto, dl) in self.config.items():
            ring = [d[0] for d in dl]
            self.services[(addr, port, proto)] = Svc(slot, addr, port, proto, ring)
            self.svc_keys.append((addr, port, proto))
            for dslot, daddr, dport, fwd in dl:
                self.dests[dslot] = MDest(dslot, daddr, dport, fwd, slot)
        self.gone_dest = 12

    def _write_config(self):
        s = self.s
        for name in ("services", "sched_ring", "conn_table"):
            getattr(s, name).clear()
        for slot in range(16):
            s.dests.put(slot, S.DestEntry())
            s.sched_pos.put(slot, S.SchedPos())
        for (addr, port, proto), svc in self.services.items():
            for i, dslot in enumerate(svc.ring):
                s.sched_ring.put(S.RingKey(svc.slot, i), C.c_uint32(dslot))
            s.services.put(S.SvcKey(addr=(C.c_uint8 * 4)(*addr), port=socket.htons(port),
                                    proto=proto),
                           S.SvcEntry(slot=svc.slot, ring_len=len(svc.ring),
                                     sched=S.XDPLB_SCHED_RR))
        for d in self.dests.values():
            self._put_dest(d)

    def _put_dest(self, d):
        self.s.dests.put(d.slot, S.DestEntry(addr=(C.c_uint8 * 4)(*d.addr), port=socket.htons(d.port),
                                        fwd=d.fwd, flags=S.XDPLB_DEST_F_AVAILABLE if d.available
                                        else 0, svc_slot=d.svc_slot, weight=1))

    def cleanup(self):
        """Leave the maps empty, as tests/test_datapath.py's fixture expects."""
        s = self.s
        for name in ("services", "sched_ring", "conn_table"):
            getattr(s, name).clear()
        for slot in range(16):
            s.dests.put(slot, S.DestEntry())
            s.sched_pos.put(slot, S.SchedPos())
            s.svc_stats.zero(slot)
            s.dest_stats.zero(slot)
        for idx in range(S.XDPLB_CNT_MAX):
            s.counters.zero(idx)

    # -- batches: reset maps and the model, warm up flows, check at the end ---

    def start_batch(self):
        for d in self.dests.values():
            d.available, d.svc_slot = True, self.config_svc_of(d.slot)
        self._write_config()
        for idx in range(S.XDPLB_CNT_MAX):
            self.s.counters.zero(idx)
        self.pos = {svc.slot: 0 for svc in self.services.values()}
        self.conns = {}
        self.flows_in, self.flows_out = [], []
        self.batch_expect = collections.Counter()
        self.in_batch = 0
        rng = self.rng
        # warm-up: tracked flows of every service, from clients with and
        # without a neighbour entry and without a route
        for key in self.svc_keys:
            addr, port, proto = key
            for client in (self.client, self.client, self.client, self.client_no_neigh,
                           self.client_no_route):
                sport = rng.randint(1024, 65535)
                if proto == 6:
                    seg = tcp_seg(client, addr, sport, port, TCP_SYN, opts=b"\x02\x04\x05\xb4")
                else:
                    seg = udp_dgram(client, addr, sport, port, payload(rng))
                f = eth(self.cli_mac, self.client_mac, ETH_P_IP) + ipv4(client, addr, proto, seg)
                self.check(bytearray(f), self.cli, "warmup")
        # the destination of service 8 goes away: unavailable, or its slot
        # reused by another service (IPVS drops packets of such flows)
        d = self.dests[self.gone_dest]
        if self.batches % 2:
            d.available = False
        else:
            d.svc_slot = 1
        self._put_dest(d)

    def config_svc_of(self, dslot):
        for slot, (_, _, _, dl) in self.config.items():
            if any(x[0] == dslot for x in dl):
                return slot
        raise KeyError(dslot)

    def end_batch(self):
        """The kernel's connection table equals the model; counters agree."""
        both = {kb for kb, _ in self.s.conns.raw_items()} & \
            {kb for kb, _ in self.s.conns_assured.raw_items()}
        if both:
            self.violation("a connection is in both conns and conns_assured", None, 0, None,
                           None, f"{len(both)} keys")
        got = {}
        for kb, vb in self.s.conn_table.raw_items():
            k = S.ConnKey.from_buffer_copy(kb)
            v = S.Conn.from_buffer_copy(vb)
            key = (bytes(k.saddr), bytes(k.daddr), socket.ntohs(k.sport), socket.ntohs(k.dport),
                   k.proto)
            got[key] = v
        if set(got) != set(self.conns):
            extra = [self._fmt_key(k) for k in set(got) - set(self.conns)][:5]
            missing = [self._fmt_key(k) for k in set(self.conns) - set(got)][:5]
            self.violation("conns map differs from the model", None, 0, None, None,
                           f"extra {extra} missing {missing}")
        for key, m in self.conns.items():
            v = got.get(key)
            if v is None:
                continue
            actual = MConn(bytes(v.addr), socket.ntohs(v.port), v.dir, v.fwd, v.dest_slot,
                           v.svc_slot)
            if actual != m:
                self.violation("conn entry differs from the model", None, 0, None, None,
                               f"{self._fmt_key(key)}: {actual} != {m}")
            elif v.ifindex:
                target = m.addr if m.dir == S.XDPLB_DIR_IN else key[1]
                exp = self.neigh.get(target)
                if exp is None or (v.ifindex, bytes(v.smac), bytes(v.dmac)) != exp:
                    self.violation("cached egress is not the FIB's", None, 0, None, None,
                                   f"{self._fmt_key(key)}: ifindex {v.ifindex}")
        cnt = {name: self.s.counters.sum(i) for i, name in enumerate(S.COUNTERS)}
        e = self.batch_expect
        checks = [("rx", self.in_batch), ("pass", e["pass"]), ("fwd", e["fwd"]),
                  ("no_dest", e["no_dest"]), ("dest_gone", e["dest_gone"]),
                  ("conn_full", 0)]
        for name, want in checks:
            if cnt[name] != want:
                self.violation(f"counter {name} is {cnt[name]}, expected {want}", None, 0,
                               None, None, str(cnt))
        if cnt["to_stack"] + cnt["no_route"] != e["ours_pass"]:
            self.violation("to_stack + no_route differ from our passes", None, 0, None, None,
                           f"{cnt} vs {e['ours_pass']}")
        self.batches += 1

    @staticmethod
    def _fmt_key(k):
        return (f"{socket.inet_ntoa(k[0])}:{k[2]} -> {socket.inet_ntoa(k[1])}:{k[3]} "
                f"proto {k[4]}")

    # -- the oracle ------------------------------------------------------------

    def fib(self, target, tot):
        """The FIB's answer for a forward to target, from the topology:
        'ok' (known neighbour), 'no_neigh' (on-link, unresolved), 'none'
        (no route, local, broadcast, or too big for the MTU), None (unsure)."""
        if tot > MTU:
            return "none"
        if target in self.neigh:
            return "ok"
        if target in self.local:
            return "none"
        if target[:3] in (b"\x0a\x00\x00", b"\xac\x50\x00"):
            return None if target[3] in (0, 255) else "no_neigh"
        return "none"

    def expect(self, f, p, ifindex):
        """What must happen to frame f: (kind, info). kind is 'pass' (not
        ours), 'drop' (reason), or 'fwd' (conn entry, new?)."""
        if p is None:
            return "pass", None
        c = self.conns.get(p.key)
        if c is not None:
            if c.dir == S.XDPLB_DIR_IN:
                d = self.dests.get(c.dest_slot)
                if d is None or not d.available or d.svc_slot != c.svc_slot:
                    return "drop", "dest_gone"
            return "fwd", (c, False)
        svc = self.services.get((p.dst, p.dport, p.proto))
        if svc is None:
            return "pass", None
        if p.proto == 6 and p.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            return "pass", None
        # The kernel drops a bad IP header in ip_rcv: IPVS never schedules it.
        # A tracked flow's packets carry whatever error they have.
        if residue(f[p.l3:p.l3 + p.ihl]):
            return "pass", None
        if not svc.ring:
            return "drop", "no_dest"
        n = self.pos[svc.slot]
        self.pos[svc.slot] = n + 1
        d = self.dests[svc.ring[n % len(svc.ring)]]
        if not d.available:
            return "drop", "no_dest"
        if d.fwd == S.IP_VS_CONN_F_MASQ:
            ok = (d.addr, p.src, d.port, p.sport, p.proto)
            self.conns[ok] = MConn(p.dst, p.dport, S.XDPLB_DIR_OUT, d.fwd, d.slot, svc.slot)
            self.flows_out.append(ok)
        nc = MConn(d.addr, d.port, S.XDPLB_DIR_IN, d.fwd, d.slot, svc.slot)
        self.conns[p.key] = nc
        self.flows_in.append(p.key)
        return "fwd", (nc, True)

    def rewritten(self, f, p, c, macs):
        """f as the data path must send it on connection c."""
        out = bytearray(f)
        if c.fwd == S.IP_VS_CONN_F_MASQ:
            if c.dir == S.XDPLB_DIR_IN:
                out[p.l3 + 16:p.l3 + 20] = c.addr
                out[p.l4 + 2:p.l4 + 4] = c.port.to_bytes(2, "big")
            else:
                out[p.l3 + 12:p.l3 + 16] = c.addr
                out[p.l4:p.l4 + 2] = c.port.to_bytes(2, "big")
        if macs is not None:
            out[0:6], out[6:12] = macs[2], macs[1]  # (ifindex, smac, dmac)
        return out

    def checksums_ok(self, f, out, p):
        """None when out's checksums carry f's validity (and UDP's zero
        rule), else what is wrong."""
        q = parse(out)
        if q is None:
            return "output does not parse"
        ri, ro = residue(f[p.l3:p.l3 + p.ihl]), residue(out[q.l3:q.l3 + q.ihl])
        if ri != ro:
            return f"IP checksum {'invalid' if ro else 'valid'} (input {'invalid' if ri else 'valid'})"
        ci, co = l4_check_off(p), l4_check_off(q)
        in_check, out_check = f[ci] << 8 | f[ci + 1], out[co] << 8 | out[co + 1]
        if p.proto == 17 and in_check == 0:
            return None if out_check == 0 else "zero UDP checksum was changed"
        if p.proto == 17 and out_check == 0:
            return "UDP checksum became zero"
        ri, ro = residue(l4_region(f, p)), residue(l4_region(out, q))
        if ri != ro:
            return (f"L4 checksum {'invalid' if ro else 'valid'} "
                    f"(input {'invalid' if ri else 'valid'})")
        return None

    def check(self, f, ifindex, kind):
        """Run one frame and check it; returns the outcome name."""
        self.frames += 1
        self.in_batch += 1
        self.kinds[kind] += 1
        p = parse(f)
        exp, info = self.expect(f, p, ifindex)
        try:
            verdict, out = self.runner.run(f, ifindex)
        except OSError as e:
            if len(f) < 14 and e.errno == errno.EINVAL:
                self.in_batch -= 1
                self.frames -= 1
                self.kinds[kind] -= 1
                self.stats["refused (< ETH_HLEN)"] += 1
                return "refused"
            self.violation(f"PROG_TEST_RUN failed: {e}", f, ifindex, None, None)
            return "error"
        if verdict == XDP_ABORTED:
            self.violation("XDP_ABORTED", f, ifindex, verdict, out)
            return "aborted"
        if len(out) != len(f):
            self.violation("output length differs", f, ifindex, verdict, out)
            return "bad"
        be = self.batch_expect
        if exp == "pass":
            be["pass"] += 1
            self.stats["not ours"] += 1
            if verdict != XDP_PASS or out != f:
                self.violation("not ours, but not passed byte-identical", f, ifindex, verdict,
                               out)
                return "bad"
            self.outcomes["pass (not ours)"] += 1
            return "pass"
        self.stats["ours"] += 1
        if p.ihl > 20:
            self.stats["ours with IP options"] += 1
        if p.l3 == 18:
            self.stats["ours with a VLAN tag"] += 1
        if exp == "drop":
            be[info] += 1
            if verdict != XDP_DROP or out != f:
                self.violation(f"expected DROP untouched ({info})", f, ifindex, verdict, out)
                return "bad"
            self.outcomes[f"drop ({info})"] += 1
            return "drop"
        c, new = info
        if new:
            self.stats["new connections"] += 1
            if not self._entry_matches(p.key, c):
                self.violation("new connection entry is not the ring's next", f, ifindex,
                               verdict, out)
                return "bad"
        return self._check_fwd(f, p, c, ifindex, verdict, out)

    def _entry_matches(self, key, c):
        k = S.ConnKey(saddr=(C.c_uint8 * 4)(*key[0]), daddr=(C.c_uint8 * 4)(*key[1]),
                      sport=socket.htons(key[2]), dport=socket.htons(key[3]), proto=key[4])
        v = self.s.conn_table.get(k)
        return v is not None and MConn(bytes(v.addr), socket.ntohs(v.port), v.dir, v.fwd,
                                       v.dest_slot, v.svc_slot) == c

    def _check_fwd(self, f, p, c, ifindex, verdict, out):
        be = self.batch_expect
        xdp_fwd = c.fwd in (S.IP_VS_CONN_F_MASQ, S.IP_VS_CONN_F_DROUTE)
        target = c.addr if c.dir == S.XDPLB_DIR_IN else p.dst
        fib = self.fib(target, p.tot)
        if verdict in (XDP_TX, XDP_REDIRECT):
            be["fwd"] += 1
            macs = self.neigh.get(target)
            if not xdp_fwd or macs is None:
                self.violation("forwarded towards a target without a neighbour", f, ifindex,
                               verdict, out)
                return "bad"
            if (verdict == XDP_TX) != (macs[0] == ifindex):
                self.violation("TX/REDIRECT does not match ingress vs egress", f, ifindex,
                               verdict, out)
                return "bad"
            form = "xmit"
            exp_out = self.rewritten(f, p, c, macs)
        elif verdict == XDP_PASS:
            be["ours_pass"] += 1
            masq = c.fwd == S.IP_VS_CONN_F_MASQ
            if xdp_fwd and fib == "ok":
                self.violation("passed a frame the FIB can forward", f, ifindex, verdict, out)
                return "bad"
            if out == f:
                form = "stack (untouched)"
                exp_out = f
                if masq and fib == "no_neigh":
                    self.violation("Masq frame for an unresolved neighbour passed without NAT",
                                   f, ifindex, verdict, out)
                    return "bad"
            else:
                form = "stack (NATed)"
                exp_out = self.rewritten(f, p, c, None)
                if not masq or fib == "none":
                    self.violation("rewritten frame passed where it must be untouched", f,
                                   ifindex, verdict, out)
                    return "bad"
        else:
            self.violation(f"unexpected {VERDICTS[verdict] if verdict < 5 else verdict} "
                           "on a tracked or new flow", f, ifindex, verdict, out)
            return "bad"
        if exp_out != f:
            # the only bytes allowed to differ besides the expected ones are
            # the checksums (verified from scratch below)
            ip_c, l4_c = p.l3 + 10, l4_check_off(p)
            a, b = bytearray(out), bytearray(exp_out)
            if c.fwd == S.IP_VS_CONN_F_MASQ and form != "stack (untouched)":
                a[ip_c:ip_c + 2] = b[ip_c:ip_c + 2]
                a[l4_c:l4_c + 2] = b[l4_c:l4_c + 2]
            if a != b:
                self.violation(f"{form}: bytes other than NAT/DR fields differ", f, ifindex,
                               verdict, out)
                return "bad"
            bad = self.checksums_ok(f, out, p)
            if bad:
                self.violation(f"{form}: {bad}", f, ifindex, verdict, out)
                return "bad"
            if not input_checksums_valid(f, p):
                self.stats["rewritten, input checksum already bad (error carried)"] += 1
            else:
                self.stats["rewritten, checksums verified valid"] += 1
        elif out != f:
            self.violation(f"{form}: frame changed", f, ifindex, verdict, out)
            return "bad"
        fwd = {S.IP_VS_CONN_F_MASQ: "Masq", S.IP_VS_CONN_F_DROUTE: "Route"}.get(
            c.fwd, f"fwd {c.fwd}")
        self.outcomes[f"{form} {VERDICTS[verdict]} {fwd}"] += 1
        return form

    def violation(self, what, f, ifindex, verdict, out, extra=""):
        v = {"what": what, "frame": bytes(f).hex() if f is not None else None,
             "ingress": "cli0" if ifindex == self.cli else "srv0" if ifindex == self.srv
             else ifindex, "verdict": VERDICTS[verdict] if verdict is not None and verdict < 5
             else verdict, "out": out.hex() if out is not None else None, "extra": extra}
        if f is not None:
            p = parse(f)
            if p is not None:
                c = self.conns.get(p.key)
                v["conn"] = f"{self._fmt_key(p.key)} entry {c}" if c else "no entry"
        self.stats["violations"] += 1
        if len(self.violations) < self.max_violations:
            self.violations.append(v)
            self.log(f"VIOLATION: {v}")

    # -- frame generation ------------------------------------------------------

    def gen(self):
        """(frame, ingress ifindex, kind)."""
        rng = self.rng
        r = rng.random()
        if r < 0.20:
            return self.gen_ipv4("syn_new")
        if r < 0.42:
            return self.gen_ipv4("flow_in")
        if r < 0.57:
            return self.gen_ipv4("flow_out")
        if r < 0.67:
            return self.gen_ipv4("udp")
        if r < 0.77:
            return self.gen_ipv4("other")
        if r < 0.83:
            return self.gen_icmp_err()
        if r < 0.89:
            return self.gen_ipv6()
        if r < 0.94:
            return self.gen_l2()
        return self.gen_random()

    def _client(self):
        r = self.rng.random()
        if r < 0.8:
            return self.client
        if r < 0.87:
            return self.client_no_neigh
        if r < 0.93:
            return self.client_no_route
        return self.rng.randbytes(4)

    def gen_ipv4(self, kind):
        rng = self.rng
        ingress = self.cli
        smac, dmac = self.client_mac, self.cli_mac
        if kind == "syn_new" or kind == "udp":
            want = 6 if kind == "syn_new" else 17
            keys = [k for k in self.svc_keys if k[2] == want]
            if rng.random() < 0.85:
                dst, dport, _ = rng.choice(keys)
            else:
                dst, dport = rng.choice((self.vip, self.vip2, self.vip3, a4("10.0.0.1"))), \
                    rng.choice((80, 53, 443, 8080, rng.randint(0, 65535)))
            src, sport, proto = self._client(), rng.randint(0, 65535), want
            flags = TCP_SYN if rng.random() < 0.7 else rng.choice(TCP_FLAG_CHOICES)
        elif kind == "flow_in" and self.flows_in:
            src, dst, sport, dport, proto = rng.choice(self.flows_in)
            flags = rng.choice(TCP_FLAG_CHOICES)
        elif kind == "flow_out" and self.flows_out:
            src, dst, sport, dport, proto = rng.choice(self.flows_out)
            if rng.random() < 0.1:  # an untracked reply: not ours
                dport = rng.randint(0, 65535)
            flags = rng.choice(TCP_FLAG_CHOICES)
            ingress = self.srv
            smac, dmac = self.rs_mac.get(src, b"\x02\0\0\0\x02\x99"), self.srv_mac
        else:
            kind = "other"
            src = self._client()
            dst = rng.choice((a4("10.0.0.1"), self.vip, a4("172.80.0.2"), rng.randbytes(4)))
            proto = rng.choice((6, 17, 1, 47, 132, 0, 255))
            sport, dport = rng.randint(0, 65535), rng.choice((80, 53, 22, rng.randint(0, 65535)))
            flags = rng.choice(TCP_FLAG_CHOICES)
            if rng.random() < 0.3:
                ingress = self.srv
        if rng.random() < 0.05:
            ingress = self.srv if ingress == self.cli else self.cli
        pl = payload(rng)
        if proto == 6:
            l4 = tcp_seg(src, dst, sport, dport, flags, pl, tcp_options(rng) if
                         rng.random() < 0.3 else b"", seq=rng.getrandbits(32),
                         ack=rng.getrandbits(32))
        elif proto == 17:
            l4 = udp_dgram(src, dst, sport, dport, pl, zero_check=rng.random() < 0.15)
        elif proto == 1:
            l4 = bytes((8, 0, 0, 0)) + rng.randbytes(4) + pl
        else:
            l4 = pl
        opts, tags, frag, tos = b"", (), 0, 0
        mods = []
        if rng.random() < 0.15:
            opts = ip_options(rng)
            mods.append("ipopts")
        if rng.random() < 0.1:
            tos = rng.getrandbits(8)
        r = rng.random()
        if r < 0.18:
            tags = ((rng.choice((ETH_P_8021Q, ETH_P_8021AD)), rng.getrandbits(16)),)
            mods.append("vlan")
        elif r < 0.26:
            tags = tuple((rng.choice((ETH_P_8021Q, ETH_P_8021AD, rng.getrandbits(16))),
                          rng.getrandbits(16)) for _ in range(rng.randint(2, 4)))
            mods.append("vlan-stack")
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
        if rng.random() < 0.08:
            f += rng.choice((b"\0" * rng.randint(1, 20), rng.randbytes(rng.randint(1, 40))))
            mods.append("padding")
        if rng.random() < 0.35:
            self.mutate(f, 14 + 4 * len(tags))
            mods.append("mutated")
        if len(f) > MAX_FRAME:
            del f[MAX_FRAME:]
        if mods:
            for m in mods:
                self.kinds[f"  +{m}"] += 1
        return f, ingress, kind

    def mutate(self, f, l3):
        rng = self.rng
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            op = rng.randrange(12)
            n = len(f)
            if op == 0:  # bit flips, mostly in the headers
                for _ in range(rng.randint(1, 4)):
                    i = rng.randrange(min(n, 80)) if rng.random() < 0.8 else rng.randrange(n)
                    f[i] ^= 1 << rng.randrange(8)
            elif op == 1:  # an interesting byte value
                i = rng.randrange(min(n, 80))
                f[i] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01, 0x45, 0x40, 0x4F))
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

    def gen_icmp_err(self):
        """ICMP errors towards the VIP or the client quoting a tracked flow's
        headers, garbage, or a truncated quote: never ours."""
        rng = self.rng
        flows = self.flows_in + self.flows_out
        if flows and rng.random() < 0.6:
            s, d, sp, dp, proto = rng.choice(flows)
            inner = ipv4(s, d, proto, struct.pack("!HH", sp, dp) + rng.randbytes(rng.choice(
                (0, 4, 16))))
            inner = inner[:rng.choice((len(inner), 20, 28, rng.randint(0, len(inner))))]
        else:
            inner = rng.randbytes(rng.randint(0, 60))
        typ, code = rng.choice(((3, 0), (3, 1), (3, 3), (3, 4), (11, 0), (12, 0), (5, 1),
                                (4, 0), (rng.randrange(256), rng.randrange(256))))
        icmp = bytearray(struct.pack("!BBHI", typ, code, 0, 1500 if code == 4 else 0) + inner)
        icmp[2:4] = csum_for(icmp).to_bytes(2, "big")
        src = rng.choice((self.rs[0], a4("10.0.0.254"), self.client, rng.randbytes(4)))
        dst = rng.choice((self.vip, self.vip2, self.client, self.rs[1]))
        tags = ((ETH_P_8021Q, 5),) if rng.random() < 0.15 else ()
        f = bytearray(eth(self.cli_mac, self.client_mac, ETH_P_IP, tags) +
                      ipv4(src, dst, 1, bytes(icmp)))
        if rng.random() < 0.25:
            self.mutate(f, 14 + 4 * len(tags))
        return f, rng.choice((self.cli, self.srv)), "icmp_err"

    def gen_ipv6(self):
        rng = self.rng
        nh_chain = [rng.choice((0, 43, 44, 60, 51, 135, 59)) for _ in range(rng.randint(0, 4))]
        last = rng.choice((6, 17, 58))
        body = b""
        # build from the innermost header outwards
        if last == 6:
            body = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, TCP_SYN, 1024, 0, 0)
        elif last == 17:
            body = struct.pack("!HHHH", 5353, 53, 8 + 4, 0) + b"abcd"
        else:
            body = bytes((128, 0, 0, 0, 0, 1, 0, 1))
        nxt = last
        for h in reversed(nh_chain):
            if h == 44:
                ext = struct.pack("!BBHI", nxt, 0, rng.choice((0, 1, 8, 0x0009)), rng.getrandbits(32))
            elif h == 51:
                ext = struct.pack("!BBH", nxt, 4, 0) + rng.randbytes(20)
            elif h == 59:  # no next header
                ext = b""
                nxt = 59
                body = rng.randbytes(rng.randint(0, 16))
                continue
            else:
                ln = rng.randint(0, 2)
                ext = struct.pack("!BB", nxt, ln) + rng.randbytes(6 + 8 * ln)
            body = ext + body
            nxt = h
        ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), nxt, 64,
                          b"\xfd" + b"\0" * 14 + b"\x02", b"\xfd" + b"\0" * 14 + b"\x01") + body
        tags = ((ETH_P_8021Q, 9),) if rng.random() < 0.2 else ()
        f = bytearray(eth(self.cli_mac, self.client_mac, ETH_P_IPV6, tags) + ip6)
        if rng.random() < 0.3:
            # an IPv4 header hiding behind an IPv6 EtherType, or the reverse
            if rng.random() < 0.5:
                f[12 + 4 * len(tags):14 + 4 * len(tags)] = b"\x08\x00"
            self.mutate(f, 14 + 4 * len(tags))
        return f, self.cli, "ipv6_ext"

    def gen_l2(self):
        rng = self.rng
        r = rng.random()
        if r < 0.3:  # ARP
            body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, self.client_mac,
                               self.client, b"\0" * 6, self.vip)
            f = eth(b"\xff" * 6, self.client_mac, ETH_P_ARP) + body
        elif r < 0.6:  # a VLAN stack whose innermost frame is ours-looking
            tags = tuple((rng.choice((ETH_P_8021Q, ETH_P_8021AD)), rng.getrandbits(16))
                         for _ in range(rng.randint(2, 5)))
            seg = tcp_seg(self.client, self.vip, rng.randint(1024, 65535), 80, TCP_SYN)
            f = eth(self.cli_mac, self.client_mac, ETH_P_IP, tags) + ipv4(self.client, self.vip,
                                                                         6, seg)
        else:  # other EtherTypes (LLDP, MPLS, PPPoE, 802.3 length) with IPv4 inside
            et = rng.choice((0x88CC, 0x8847, 0x8864, 0x0600, 0x002E, 0x9100, rng.randrange(0x10000)))
            seg = tcp_seg(self.client, self.vip, 1234, 80, TCP_SYN)
            f = eth(self.cli_mac, self.client_mac, et) + ipv4(self.client, self.vip, 6, seg)
        f = bytearray(f)
        if rng.random() < 0.2:
            self.mutate(f, 14)
        return f, self.cli, "l2_other"

    def gen_random(self):
        rng = self.rng
        n = rng.choice((14, 15, 18, 33, 34, 37, 38, 42, 54, 60, 64, rng.randint(14, 200),
                        rng.randint(14, MAX_FRAME)))
        f = bytearray(rng.randbytes(n))
        r = rng.random()
        if r < 0.5 and n >= 16:  # get past the first checks
            f[12:14] = b"\x08\x00"
            f[14] = 0x40 | (f[14] & 15)
            if rng.random() < 0.5:
                f[14] = 0x45
                f[16:18] = (n - 14).to_bytes(2, "big")
                f[20:22] = b"\0\0"
                if n > 23:
                    f[23] = rng.choice((6, 17))
                if rng.random() < 0.3 and n > 34:
                    f[30:34] = rng.choice((self.vip, self.vip2))
                    if n > 38:
                        f[36:38] = rng.choice((80, 53, 5000)).to_bytes(2, "big")
                        f[47:48] = bytes((TCP_SYN,)) if n > 47 else b""
                    if rng.random() < 0.5:
                        fix_checksums(f)
        return f, rng.choice((self.cli, self.srv)), "random"

    # -- sweeps and the main loop ----------------------------------------------

    def sweep(self, f, ingress, kind="truncation sweep"):
        """f truncated at every offset (0 .. len), then whole."""
        for n in range(len(f) + 1):
            self.check(bytearray(f[:n]), ingress, kind)

    def template(self):
        """A frame of ours, for a truncation sweep."""
        rng = self.rng
        for _ in range(50):
            f, ingress, _ = self.gen_ipv4(rng.choice(("syn_new", "flow_in", "flow_out", "udp")))
            if parse(f) is not None and len(f) <= 200:
                return f, ingress
        seg = tcp_seg(self.client, self.vip, 1234, 80, TCP_SYN)
        return bytearray(eth(self.cli_mac, self.client_mac, ETH_P_IP) +
                         ipv4(self.client, self.vip, 6, seg)), self.cli

    def run(self, frames, sweep_every=1, stop_on_violation=False):
        """Fuzz about `frames` frames in batches; returns the number of violations."""
        t0 = time.monotonic()
        last = t0
        while self.frames < frames:
            self.start_batch()
            if self.batches % sweep_every == 0:
                f, ingress = self.template()
                self.sweep(f, ingress)
            while self.in_batch < self.batch and self.frames < frames:
                f, ingress, kind = self.gen()
                self.check(f, ingress, kind)
            self.end_batch()
            if stop_on_violation and self.violations:
                break
            now = time.monotonic()
            if now - last > 10:
                last = now
                self.log(f"  {self.frames} frames, {self.frames / (now - t0):.0f} frames/s, "
                         f"{self.stats['violations']} violations")
        self.elapsed = time.monotonic() - t0
        return self.stats["violations"]

    def summary(self):
        el = getattr(self, "elapsed", 0) or 1e-9
        lines = [(f"seed {self.seed}: {self.frames} frames in {el:.1f} s "
                  f"({self.frames / el:.0f} frames/s), {self.batches} batches, "
                  f"{self.stats['violations']} violations")]
        lines.append("frames by kind:")
        for k, v in sorted(self.kinds.items(), key=lambda kv: (kv[0].startswith(" "), kv[0])):
            lines.append(f"  {k:<28} {v:>10}")
        lines.append("oracle:")
        for k, v in sorted(self.stats.items()):
            lines.append(f"  {k:<56} {v:>10}")
        lines.append("outcomes:")
        for k, v in sorted(self.outcomes.items()):
            lines.append(f"  {k:<40} {v:>10}")
        for v in self.violations:
            lines.append(f"VIOLATION {v}")
        return "\n".join(lines)


# --- a private environment for the standalone run ----------------------------

class FuzzEnv:
    """A netns with TOPO and the program compiled and pinned in a private
    folder; both are removed on exit."""

    def __init__(self):
        self.ns = None
        self.state = None
        self.folder = None

    def __enter__(self):
        from . import loader
        from . import state as st
        try:
            self.net = testnet.build(f"xdplbfz-{os.getpid()}")
            self.ns = ns = self.net["ns"]
            self.folder = os.path.join(st.bpffs_root(create=True), "xdplb",
                                       f"fuzz-{os.getpid()}")
            self.state = loader.open_state(self.folder)
            ns.enter()
            for idx in (self.net["cli_idx"], self.net["srv_idx"]):
                self.state.tx_ports.put(idx, self.state.tx_ports.value_type(idx))
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        if self.state is not None:
            self.state.close()
        if self.folder:
            from .state import remove
            remove(self.folder)
        if self.ns is not None:
            self.ns.delete()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m xdplb.fuzz",
                                 description="Fuzz the XDP data path through BPF_PROG_TEST_RUN.")
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to run (default 10^6)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    ap.add_argument("--batch", type=int, default=4096,
                    help="frames between map resets and table checks (default 4096)")
    ap.add_argument("--stop", action="store_true", help="stop after the first batch with a violation")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("xdplb.fuzz: needs root (netns, bpffs, BPF_PROG_TEST_RUN)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"xdplb fuzz: seed {seed}, {args.frames} frames "
          f"(reproduce with: python -m xdplb.fuzz --frames {args.frames} --seed {seed})",
          flush=True)
    with FuzzEnv() as env:
        fz = Fuzzer(env.state, env.net, seed=seed, batch=args.batch,
                    log=lambda m: print(m, flush=True))
        try:
            bad = fz.run(args.frames, stop_on_violation=args.stop)
        finally:
            fz.cleanup()
        print(fz.summary(), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
