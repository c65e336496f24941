"""Packet fuzzing of the data path through BPF_PROG_TEST_RUN (issue 6, part 1).

The short run of tests/fuzz/ (the long one is `make fuzz`): seeded random
and mutated IPv4 and IPv6 frames through the real program with services,
NAT flows and DR flows of both families configured, every frame checked by
an oracle written from the README's promises (never ABORTED; not ours ->
XDP_PASS byte-identical; ours -> only NAT/DR fields change and checksums
stay valid). The oracle itself is tested in test_fuzz_oracle.py: against
scapy's checksums and by faults injected into the program's answers, which
it must report.

XDPLB_FUZZ_SEED / XDPLB_FUZZ_FRAMES override the short run's seed and size.
"""
import os

import pytest

from conftest import FUZZ_SEED as SEED
from fuzz import icmp
from fuzz import wire as F
from test_fuzz_oracle import icmp6_too_big

FRAMES = int(os.environ.get("XDPLB_FUZZ_FRAMES", "100000"))


def report(fz):
    print(fz.summary())
    return "\n".join(str(v) for v in fz.violations)


# --- the data path under fuzzing ------------------------------------------------

def test_fuzz_short(fuzzer):
    """FRAMES seeded random and mutated frames (the seed is printed)."""
    print(f"fuzz seed {SEED} (XDPLB_FUZZ_SEED={SEED} to reproduce)")
    bad = fuzzer.run(FRAMES)
    text = report(fuzzer)
    assert bad == 0, f"seed {SEED}: {bad} violations\n{text}"
    st = fuzzer.stats
    assert fuzzer.frames >= FRAMES
    # the run reached every part of the oracle
    assert st["ours"] > FRAMES // 5 and st["not ours"] > FRAMES // 5
    assert st["new connections"] > 100
    assert st["rewritten, checksums verified valid"] > 100
    # replies reached every step of their lookup through rs_table
    assert st["replies found through rs_table"] > 100
    assert st["replies found under port 0 (port-zero service)"] > 0
    assert st["replies found past the first service listed"] > 0
    for outcome in ("xmit REDIRECT Masq", "xmit TX Masq", "xmit REDIRECT Route",
                    "stack (NATed) PASS Masq", "stack (untouched) PASS Route",
                    "answer (no_dest)", "drop (dest_gone)", "later fragment: xmit REDIRECT",
                    "later fragment: xmit TX", "later fragment: nat PASS",
                    "later fragment: plain PASS", "later fragment: untracked PASS",
                    "later fragment: overlap DROP"):
        assert fuzzer.oracle.outcomes[outcome] > 0, outcome
    assert st["first fragments sent on"] > 100
    # ICMP errors translated both ways, the answers and the MTU's outcomes
    for outcome in ("icmp to the real server REDIRECT Masq", "icmp to the real server REDIRECT Route",
                    "icmp to the client TX Masq", "answer (frag_needed)",
                    "over the MTU, to the stack NATed", "over the MTU, dropped"):
        assert fuzzer.oracle.outcomes[outcome] > 0, (outcome, fuzzer.oracle.outcomes)
    # IPv6 as IPv4: both ways, through extension headers, its answers, its
    # ICMPv6 errors translated both ways, its mutants
    assert st["ours over IPv6 with extension headers"] > 100
    assert st["replies found through rs_table6"] > 100
    for outcome in ("xmit REDIRECT Masq IPv6", "xmit TX Masq IPv6", "xmit REDIRECT Route IPv6",
                    "stack (NATed) PASS Masq IPv6", "stack (untouched) PASS Route IPv6",
                    "answer (no_dest) IPv6", "answer (frag_needed) IPv6", "drop (dest_gone) IPv6",
                    "over the MTU, to the stack untouched IPv6",
                    "icmp to the real server REDIRECT Masq IPv6",
                    "icmp to the real server REDIRECT Route IPv6",
                    "icmp to the client REDIRECT Masq IPv6",
                    "later fragment: xmit REDIRECT IPv6", "later fragment: xmit TX IPv6",
                    "later fragment: untracked PASS IPv6", "later fragment: overlap DROP IPv6"):
        assert fuzzer.oracle.outcomes[outcome] > 0, (outcome, fuzzer.oracle.outcomes)
    for kind in ("  +ext-walked", "  +ext-more-than-four", "  +ext-fragment", "  +ext-esp",
                 "  +ext-ah", "  +payload-length-wrong", "  +icmp-untracked",
                 "truncation sweep6", "icmp6_err", "random6", "fragment_first6",
                 "  +frag-overlap6"):
        assert fuzzer.kinds[kind] > 0, kind


def test_truncated_at_every_offset(fuzzer):
    """Frames of ours (VLAN, IP and TCP options, payload; UDP with and without
    checksum; a Masq reply; a first and a later fragment; ICMP errors; the
    same over IPv6, with extension headers; generated ones of both
    families), cut at every length: below 14 bytes the kernel refuses,
    every other length is checked by the oracle."""
    fz = fuzzer
    fz.start_batch()
    net = fz.net
    client, vip = net.client, net.vip
    seg = F.tcp_seg(client, vip, 41000, 80, F.TCP_SYN, b"payload",
                    b"\x02\x04\x05\xb4\x01\x03\x03\x07")
    reply_key = next(k for k in fz.oracle.flows_out[F.V4] if k[4] == 6)
    rsrc, rdst, rsport, rdport, _ = reply_key
    templates = [
        (F.eth(net.cli_mac, net.client_mac, F.ETH_P_IP, ((F.ETH_P_8021Q, 7),)) +
         F.ipv4(client, vip, 6, seg, opts=b"\x94\x04\x00\x00\x01\x01\x01\x00"), net.cli),
        (F.eth(net.cli_mac, net.client_mac, F.ETH_P_IP) +
         F.ipv4(client, vip, 17, F.udp_dgram(client, vip, 41001, 53, b"q" * 9)), net.cli),
        (F.eth(net.cli_mac, net.client_mac, F.ETH_P_IP) +
         F.ipv4(client, vip, 17, F.udp_dgram(client, vip, 41002, 53, b"q" * 9,
                                             zero_check=True)), net.cli),
        (F.eth(net.srv_mac, net.rs_mac[rsrc], F.ETH_P_IP) +
         F.ipv4(rsrc, rdst, 6, F.tcp_seg(rsrc, rdst, rsport, rdport, F.TCP_ACK, b"resp")),
         net.srv),
        (F.eth(net.cli_mac, net.client_mac, F.ETH_P_IP) +
         F.ipv4(client, F.a4("10.0.0.101"), 6,
                F.tcp_seg(client, F.a4("10.0.0.101"), 41003, 80, F.TCP_SYN)), net.cli),
    ]
    dgram = F.udp_dgram(client, vip, 41004, 53, b"f" * 40)
    first, later = (F.eth(net.cli_mac, net.client_mac, F.ETH_P_IP) +
                    F.ipv4(client, vip, 17, part, ident=7, frag=frag)
                    for part, frag in ((dgram[:24], 0x2000), (dgram[24:], 3)))
    templates.append((first, net.cli))
    templates += _ipv6_templates(fz)
    for frame, ingress in templates:
        assert F.parse(frame) is not None or icmp.icmp_error(frame) is not None
        fz.sweep(frame, ingress)
    assert F.parse_later(later).offset == 24
    fz.sweep(later, net.cli)      # whole at last: it follows the first fragment
    for _ in range(10):
        for fam in (F.V4, F.V6):
            fz.sweep(*fz.gen.gen_icmp_err(fam)[:2])
        fz.sweep(*fz.gen.gen_ip(fz.rng.choice(("syn_new", "flow_in", "flow_out")), F.V6)[:2])
        fz.sweep(*fz.gen.gen_ip("other", F.V6)[:2])
    fz.end_batch()
    assert fz.stats["violations"] == 0, report(fz)
    assert fz.stats["refused (< ETH_HLEN)"] == 14 * (len(templates) + 1 + 40)
    outcomes = fz.oracle.outcomes
    assert outcomes["later fragment: xmit REDIRECT"] == 1
    assert outcomes["icmp to the real server REDIRECT Masq IPv6"] >= 1
    assert outcomes["icmp to the client REDIRECT Masq IPv6"] >= 1
    assert outcomes["xmit REDIRECT Route IPv6"] >= 1


def _ipv6_templates(fz):
    """IPv6 frames of ours for test_truncated_at_every_offset: a SYN with a
    VLAN tag, three extension headers, TCP options and payload; UDP; a
    Masq reply; a SYN to Route; a router's packet too big about a Masq
    reply; a real server's port unreachable about a client's datagram."""
    net, a = fz.net, fz.net.addrs[F.V6]
    client, vip = a.client, a.vip
    seg = F.tcp_seg(client, vip, 41000, 80, F.TCP_SYN, b"payload",
                    b"\x02\x04\x05\xb4\x01\x03\x03\x07")
    exts = F.ext_header(F.NH_ROUTING, 0) + F.ext_header(F.NH_DEST, 1) + F.ext_header(6, 0)
    rsrc, rdst, rsport, rdport, _ = next(k for k in fz.oracle.flows_out[F.V6] if k[4] == 6)
    c6, v6, cport, vport, _ = next(k for k in fz.oracle.flows_in[F.V6]
                                   if k[4] == 17 and fz.oracle.conns[k].addr in a.rs)
    conn = fz.oracle.conns[(c6, v6, cport, vport, 17)]
    tcp_client, _, tcp_cport, _, _ = next(
        k for k in fz.oracle.flows_in[F.V6]
        if (k[0], k[1], k[3], k[4]) == (client, vip, 80, 6) and fz.oracle.conns[k].addr in a.rs)
    router = F.a6("fd00:1::9")
    too_big = F.ipv6(router, vip, F.NH_ICMPV6, icmp6_too_big(router, vip, F.ipv6(
        vip, tcp_client, 6, F.tcp_seg(vip, tcp_client, 80, tcp_cport, F.TCP_ACK, b"d" * 64))))
    quoted = F.ipv6(c6, conn.addr, 17, F.udp_dgram(c6, conn.addr, cport, conn.port, b"q"))
    unreach = bytearray(icmp6_too_big(conn.addr, c6, quoted, mtu=0))
    unreach[0:2] = b"\x01\x04"
    unreach[2:4] = b"\0\0"
    unreach[2:4] = F.csum_for(F.pseudo(conn.addr, c6, F.NH_ICMPV6, len(unreach)) +
                              unreach).to_bytes(2, "big")
    cli = F.eth(net.cli_mac, net.client_mac, F.ETH_P_IPV6)
    return [
        (F.eth(net.cli_mac, net.client_mac, F.ETH_P_IPV6, ((F.ETH_P_8021Q, 7),)) +
         F.ipv6(client, vip, F.NH_HOP, seg, exts), net.cli),
        (cli + F.ipv6(client, vip, 17, F.udp_dgram(client, vip, 41001, 53, b"q" * 9)), net.cli),
        (F.eth(net.srv_mac, net.rs_mac[rsrc], F.ETH_P_IPV6) +
         F.ipv6(rsrc, rdst, 6, F.tcp_seg(rsrc, rdst, rsport, rdport, F.TCP_ACK, b"resp")),
         net.srv),
        (cli + F.ipv6(client, a.vip2, 6, F.tcp_seg(client, a.vip2, 41003, 80, F.TCP_SYN)),
         net.cli),
        (cli + too_big, net.cli),
        (F.eth(net.srv_mac, net.rs_mac[conn.addr], F.ETH_P_IPV6) +
         F.ipv6(conn.addr, c6, F.NH_ICMPV6, bytes(unreach)), net.srv),
    ]


def test_structured_frames_hypothesis(fuzzer):
    """Header fields drawn by hypothesis (shrinks a failure to a minimal
    frame): VLAN stacks, IHL, options, total length, fragment bits,
    protocol, TCP flags and data offset, UDP length, truncation."""
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    fz = fuzzer
    fz.start_batch()
    svcs = fz.oracle.svc_keys

    @hyp.settings(max_examples=400, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(hyp.HealthCheck))
    @hyp.given(
        svc=st.sampled_from(svcs), sport=st.integers(0, 65535),
        tags=st.lists(st.tuples(st.sampled_from((0x8100, 0x88A8, 0x0800, 0x86DD)),
                                st.integers(0, 0xFFFF)), max_size=3),
        opts=st.binary(max_size=40), ihl_delta=st.integers(-5, 10),
        tot_delta=st.one_of(st.just(0), st.integers(-70, 70)),
        frag=st.one_of(st.just(0), st.just(0x4000), st.integers(0, 0xFFFF)),
        proto=st.one_of(st.none(), st.integers(0, 255)),
        flags=st.one_of(st.just(F.TCP_SYN), st.integers(0, 255)),
        doff=st.one_of(st.none(), st.integers(0, 15)),
        ulen=st.one_of(st.none(), st.integers(0, 0xFFFF)),
        body=st.binary(max_size=64), cut=st.one_of(st.none(), st.integers(14, 200)),
        fix=st.booleans(), reply=st.booleans())
    def one(svc, sport, tags, opts, ihl_delta, tot_delta, frag, proto, flags, doff, ulen,
            body, cut, fix, reply):
        vip, vport, p4 = svc
        src, dst, dport, ingress = fz.net.client, vip, vport, fz.net.cli
        flows_out = fz.oracle.flows_out[F.V4]
        if reply and flows_out:
            src, dst, sport, dport, p4 = flows_out[sport % len(flows_out)]
            ingress = fz.net.srv
        if p4 == 6:
            l4 = F.tcp_seg(src, dst, sport, dport, flags, body)
        else:
            l4 = F.udp_dgram(src, dst, sport, dport, body)
        opts = opts[:len(opts) // 4 * 4]
        f = bytearray(F.eth(fz.net.cli_mac, fz.net.client_mac, F.ETH_P_IP, tuple(tags)) +
                      F.ipv4(src, dst, p4, l4, opts, frag=frag))
        l3 = 14 + 4 * len(tags)
        f[l3] = 0x40 | max(0, min(15, (f[l3] & 15) + ihl_delta))
        tot = (f[l3 + 2] << 8 | f[l3 + 3]) + tot_delta
        f[l3 + 2:l3 + 4] = (tot & 0xFFFF).to_bytes(2, "big")
        if proto is not None:
            f[l3 + 9] = proto
        l4o = l3 + 20 + len(opts)
        if doff is not None and p4 == 6:
            f[l4o + 12] = doff << 4
        if ulen is not None and p4 == 17:
            f[l4o + 4:l4o + 6] = ulen.to_bytes(2, "big")
        if cut is not None:
            del f[cut:]
        if fix:
            F.fix_checksums(f)
        before = fz.stats["violations"]
        fz.check(f, ingress, "hypothesis")
        assert fz.stats["violations"] == before, fz.violations[-1:]

    one()
    fz.end_batch()
    assert fz.stats["violations"] == 0, report(fz)


# --- findings: data-path bugs the fuzzer found, kept as regressions ----------

def test_bad_ip_header_checksum_is_not_ours(fuzzer):
    """Setup: the fuzz services (10.0.0.100:80 TCP, Masq -> 172.80.0.2:8080
    first in its ring). Frame: 02:00:00:00:01:02 -> 02:00:00:00:01:01, SYN
    10.0.0.2:40000 -> 10.0.0.100:80, IP checksum 0x676b instead of 0x666b
    (the TCP checksum is valid), in on cli0."""
    fz = fuzzer
    fz.write_config()
    frame = bytes.fromhex("020000000101020000000102080045000028000000004006676b0a000002"
                          "0a0000649c400050000003e8000000005002fffffb040000")
    p = F.parse(frame)
    assert p is not None and F.residue(frame[14:34]) != 0
    verdict, out, _ = fz.runner.run(frame, fz.net.cli)
    assert (F.VERDICTS[verdict], out.hex()) == ("PASS", frame.hex())
    assert not list(fz.s.conn_table.keys())
