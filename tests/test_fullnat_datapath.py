"""Full-NAT and hairpin through the real data path, packet by packet
(BPF_PROG_TEST_RUN), configured through the control API as xdplbadm does:
both directions of TCP and UDP compared byte for byte with frames scapy
builds (addresses, ports, MACs, IP and L4 checksums recomputed from
scratch), the reply tuple lent through fnat_out, port allocation from
threads pinned to every CPU at once, exhaustion (a state compiled with a
4-port range), ports given back by expiry, hairpin's source NAT, and stale
mappings that lead nowhere.
"""
import ctypes as C
import os
import socket
import threading

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from packets import rebuilt, tcp, udp
from xdplb import bpfsys, config, loader
from xdplb import state as statemod
from xdplb import structs as T
from xdplb.control import Control
from xdplb.model import (IP_VS_CONN_F_MASQ, IPPROTO_TCP, IPPROTO_UDP, Destination, Service)
from xdplb.structs import XDPLB_CONN_F_FULLNAT, XDPLB_SVC_F_HAIRPIN

XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 1, 2, 3, 4
VIP, VPORT, RPORT = "10.0.0.100", 80, 8080
CLIENT, CLIENT_MAC = "10.0.0.2", "02:00:00:00:01:02"
NEAR_RS, NEAR_RS_MAC = "10.0.0.3", "02:00:00:00:01:03"
CLI_MAC, SRV_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
RS, RS_MAC = "172.80.0.2", "02:00:00:00:02:02"
LADDR, LADDR2 = "172.80.0.1", "172.80.0.50"     # the balancer's own, and another
CLI_IP = "10.0.0.1"                             # the balancer's on the client link


def a4(addr):
    return (C.c_uint8 * 4)(*socket.inet_aton(addr))


@pytest.fixture
def fn(ctl, datapath_net):
    """conftest's control (maps emptied before and after, inside the
    data-path netns) with the test network and the counters as they stood."""
    ctl.net = datapath_net
    ctl.counted = _counters(ctl)
    return ctl


def _counters(ctl):
    return {name: ctl.st.counters.sum(i) for i, name in enumerate(T.COUNTERS)}


def counters(ctl):
    return {n: v - ctl.counted[n] for n, v in _counters(ctl).items() if v - ctl.counted[n]}


def run(ctl, frame, side="cli"):
    verdict, out, _ = bpfsys.prog_test_run(ctl.st.prog_fd, bytes(frame),
                                           ingress_ifindex=ctl.net[side + "_idx"])
    return verdict, out


def service(ctl, proto=IPPROTO_TCP, rss=(RS,), laddrs=(LADDR,), fwd=XDPLB_CONN_F_FULLNAT,
            flags=0):
    key = (proto, VIP, VPORT)
    ctl.add_service(Service(*key, sched="rr", flags=flags))
    for la in laddrs:
        ctl.apply(config.add_laddr, key, la, 0)
    for addr in rss:
        ctl.add_dest(key, Destination(addr, RPORT, fwd=fwd, weight=1))
    return key


def conn_key(saddr, sport, proto=IPPROTO_TCP, daddr=VIP, dport=VPORT):
    return T.ConnKey(a4(saddr), a4(daddr), socket.htons(sport), socket.htons(dport), proto)


def entry(ctl, saddr, sport, proto=IPPROTO_TCP):
    return ctl.st.conn_table.get(conn_key(saddr, sport, proto))


def lent(c):
    """(local address, local port) an entry was lent."""
    return socket.inet_ntoa(bytes(c.laddr)), socket.ntohs(c.lport)


def mappings(ctl):
    """{reply tuple (rs, rport, laddr, lport, proto): client key bytes} of fnat_out."""
    out = {}
    for kb, vb in ctl.st.fnat_out.raw_items():
        k = T.ConnKey.from_buffer_copy(kb)
        out[(socket.inet_ntoa(bytes(k.saddr)), socket.ntohs(k.sport),
             socket.inet_ntoa(bytes(k.daddr)), socket.ntohs(k.dport), k.proto)] = vb
    return out


def to_rs(frame, la, lport, rs=RS, rs_mac=RS_MAC):
    l4 = frame[IP].payload.__class__
    return rebuilt(frame, {(Ether, "src"): SRV_MAC, (Ether, "dst"): rs_mac, (IP, "src"): la,
                           (IP, "dst"): rs, (l4, "sport"): lport, (l4, "dport"): RPORT})


def to_client(frame, client=CLIENT, cport=40000, mac=CLIENT_MAC):
    l4 = frame[IP].payload.__class__
    return rebuilt(frame, {(Ether, "src"): CLI_MAC, (Ether, "dst"): mac, (IP, "src"): VIP,
                           (IP, "dst"): client, (l4, "sport"): VPORT, (l4, "dport"): cport})


# --- both directions, every byte ---------------------------------------------------------

def test_fullnat_tcp_both_ways(fn):
    service(fn)
    syn = tcp(CLIENT, VIP, 40000, VPORT)
    verdict, out = run(fn, syn)
    c = entry(fn, CLIENT, 40000)
    assert c.fwd == XDPLB_CONN_F_FULLNAT and c.state == T.IP_VS_TCP_S_SYN_RECV
    la, lport = lent(c)
    assert la == LADDR and T.XDPLB_FNAT_PORT_MIN <= lport <= T.XDPLB_FNAT_PORT_MAX
    assert (verdict, out) == (XDP_REDIRECT, to_rs(syn, la, lport))
    assert mappings(fn) == {(RS, RPORT, LADDR, lport, IPPROTO_TCP):
                            bytes(conn_key(CLIENT, 40000))}

    synack = tcp(RS, LADDR, RPORT, lport, flags="SA", smac=RS_MAC, dmac=SRV_MAC)
    assert run(fn, synack, "srv") == (XDP_REDIRECT, to_client(synack))
    ack = tcp(CLIENT, VIP, 40000, VPORT, flags="A", payload=b"GET / HTTP/1.0\r\n\r\n")
    assert run(fn, ack) == (XDP_REDIRECT, to_rs(ack, la, lport))
    c = entry(fn, CLIENT, 40000)
    assert c.state == T.IP_VS_TCP_S_ESTABLISHED and lent(c) == (la, lport)
    assert fn.st.conn_table.is_assured(conn_key(CLIENT, 40000))   # moved, mapping kept
    data = tcp(RS, LADDR, RPORT, lport, flags="PA", smac=RS_MAC, dmac=SRV_MAC,
               payload=b"HTTP/1.0 200 OK\r\n\r\n")
    assert run(fn, data, "srv") == (XDP_REDIRECT, to_client(data))
    svc = fn.st.svc_stats.sum(Control(fn.st).services()[0].slot)
    assert (svc.conns, svc.inpkts, svc.outpkts) == (1, 2, 2)
    assert svc.inbytes == len(syn[IP]) + len(ack[IP])
    assert svc.outbytes == len(synack[IP]) + len(data[IP])
    assert counters(fn) == {"rx": 4, "fwd": 4}
    # the listing keeps IPVS's columns: the client, the VIP, the real server
    [row] = Control(fn.st).connections()
    assert row[2:9] == (CLIENT, 40000, VIP, VPORT, RS, RPORT, "ESTABLISHED")
    assert row[12] == ("FullNat", LADDR, lport)


def test_fullnat_udp_both_ways_and_zero_checksum(fn):
    service(fn, proto=IPPROTO_UDP)
    for csum in (None, 0):
        cport = 41000 if csum is None else 41001
        dgram = udp(CLIENT, VIP, cport, VPORT, chksum=csum)
        verdict, out = run(fn, dgram)
        la, lport = lent(entry(fn, CLIENT, cport, IPPROTO_UDP))
        assert (verdict, out) == (XDP_REDIRECT, to_rs(dgram, la, lport))
        if csum == 0:
            assert out[14 + 20 + 6:14 + 20 + 8] == b"\0\0"      # no checksum stays none
        reply = udp(RS, LADDR, RPORT, lport, smac=RS_MAC, dmac=SRV_MAC, chksum=csum,
                    payload=b"answer")
        assert run(fn, reply, "srv") == (XDP_REDIRECT, to_client(reply, cport=cport))


def test_local_addresses_taken_in_turn(fn):
    """Two local addresses: connections use both, and each reply tuple is
    lent once."""
    service(fn, laddrs=(LADDR, LADDR2))
    used = set()
    for i in range(64):
        run(fn, tcp(CLIENT, VIP, 42000 + i, VPORT))
        used.add(lent(entry(fn, CLIENT, 42000 + i)))
    assert len(used) == 64 and {la for la, _ in used} == {LADDR, LADDR2}
    assert len(mappings(fn)) == 64


# --- what is not a full-NAT reply --------------------------------------------------------

def test_stale_and_foreign_mappings_are_not_followed(fn):
    service(fn)
    run(fn, tcp(CLIENT, VIP, 40000, VPORT))
    c = entry(fn, CLIENT, 40000)
    _, lport = lent(c)
    # a mapping naming the live entry but another local port: the entry was
    # not lent it (a mapping left behind), so the reply is not ours
    stale = T.ConnKey(a4(RS), a4(LADDR), socket.htons(RPORT), socket.htons(lport ^ 1),
                      IPPROTO_TCP)
    fn.st.fnat_out.put(stale, conn_key(CLIENT, 40000))
    reply = tcp(RS, LADDR, RPORT, lport ^ 1, flags="SA", smac=RS_MAC, dmac=SRV_MAC)
    assert run(fn, reply, "srv") == (XDP_PASS, bytes(reply))
    # the right tuple from another real-server port, or to an unlent port: not ours
    for f in (tcp(RS, LADDR, RPORT + 1, lport, flags="SA", smac=RS_MAC, dmac=SRV_MAC),
              tcp(RS, LADDR, RPORT, lport ^ 2, flags="SA", smac=RS_MAC, dmac=SRV_MAC)):
        assert run(fn, f, "srv") == (XDP_PASS, bytes(f))
    # the entry gone (an LRU eviction tells no one): its mapping leads nowhere
    fn.st.conn_table.delete(conn_key(CLIENT, 40000))
    reply = tcp(RS, LADDR, RPORT, lport, flags="A", smac=RS_MAC, dmac=SRV_MAC)
    assert run(fn, reply, "srv") == (XDP_PASS, bytes(reply))
    # ... and the sweep releases both
    Control(fn.st).sweep()
    assert mappings(fn) == {}


def test_expiry_gives_the_port_back(fn):
    """The data path expiring an entry (a packet finds it past its timeout)
    deletes its mapping; the new connection of the same client is lent a
    tuple of its own."""
    service(fn)
    run(fn, tcp(CLIENT, VIP, 40000, VPORT))
    k = conn_key(CLIENT, 40000)
    c = fn.st.conn_table.get(k)
    old = (RS, RPORT, *lent(c), IPPROTO_TCP)
    c.last_seen = 1     # idle since boot
    fn.st.conn_table.put(k, c)
    run(fn, tcp(CLIENT, VIP, 40000, VPORT))
    new = (RS, RPORT, *lent(fn.st.conn_table.get(k)), IPPROTO_TCP)
    assert list(mappings(fn)) == [new] and (new == old or old not in mappings(fn))
    assert counters(fn)["fwd"] == 2


def test_icmp_errors_of_a_fullnat_connection(fn):
    """Fragmentation needed from the real servers' side about the client's
    packet (as sent: laddr:lport -> rs) goes to the client about its own
    packet (client:cport -> VIP:vport); from the client's side about a
    reply, to the real server about the reply as it sent it."""
    service(fn)
    syn = tcp(CLIENT, VIP, 40000, VPORT)
    _, sent = run(fn, syn)
    la, lport = lent(entry(fn, CLIENT, 40000))
    quoted = bytes(Ether(sent)[IP])[:28]
    err = (Ether(src=RS_MAC, dst=SRV_MAC) / IP(src="172.80.0.9", dst=LADDR)
           / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(quoted))
    err = Ether(bytes(err))
    verdict, out = run(fn, err, "srv")
    assert verdict == XDP_REDIRECT
    got = Ether(out)
    assert (got[Ether].dst, got[IP].src, got[IP].dst) == (CLIENT_MAC, VIP, CLIENT)
    q = got[IPerror]
    assert (q.src, q.dst, got[TCPerror].sport, got[TCPerror].dport) == (CLIENT, VIP, 40000,
                                                                         VPORT)
    assert out == rebuilt_icmp(got)
    counted = counters(fn)
    assert counted["icmp_xlate"] == 1

    reply = tcp(RS, LADDR, RPORT, lport, flags="SA", smac=RS_MAC, dmac=SRV_MAC)
    _, back = run(fn, reply, "srv")
    err = (Ether(src=CLIENT_MAC, dst=CLI_MAC) / IP(src=CLIENT, dst=VIP)
           / ICMP(type=3, code=3) / Raw(bytes(Ether(back)[IP])[:28]))
    err = Ether(bytes(err))
    verdict, out = run(fn, err)
    assert verdict == XDP_REDIRECT
    got = Ether(out)
    assert (got[Ether].dst, got[IP].src, got[IP].dst) == (RS_MAC, la, RS)
    assert (got[IPerror].src, got[IPerror].dst, got[TCPerror].sport,
            got[TCPerror].dport) == (RS, la, RPORT, lport)
    assert out == rebuilt_icmp(got)


def rebuilt_icmp(frame):
    """frame with its outer IP, quoted IP and ICMP checksums recomputed by scapy."""
    p = frame.__class__(bytes(frame))
    del p[IP].chksum
    del p[ICMP].chksum
    del p[IPerror].chksum
    return bytes(p.__class__(bytes(p)))


def _frames(dgram, smac, dmac):
    """A datagram's fragments (1,000 bytes of data each) as Ethernet frames."""
    return [bytes(Ether(src=smac, dst=dmac) / f) for f in fragment(dgram, fragsize=1000)]


def test_fullnat_fragments_both_ways(fn):
    """A fragmented datagram of a full-NAT flow: the first fragment makes the
    connection, each later one gets the same rewrite of both addresses
    (the L4 header, in the first, had its ports and checksum rewritten);
    the reply's fragments are un-NATed both ways too."""
    fn.st.frags.clear()
    service(fn, proto=IPPROTO_UDP)
    dgram = IP(src=CLIENT, dst=VIP, id=77) / UDP(sport=41000, dport=VPORT) / (b"q" * 3000)
    got = [run(fn, f) for f in _frames(dgram, CLIENT_MAC, CLI_MAC)]
    la, lport = lent(entry(fn, CLIENT, 41000, IPPROTO_UDP))
    d = dgram.copy()
    d[IP].src, d[IP].dst, d[UDP].sport, d[UDP].dport = la, RS, lport, RPORT
    del d[UDP].chksum
    assert got == [(XDP_REDIRECT, f) for f in _frames(IP(bytes(d)), SRV_MAC, RS_MAC)]
    reply = IP(src=RS, dst=la, id=78) / UDP(sport=RPORT, dport=lport) / (b"a" * 3000)
    got = [run(fn, f, "srv") for f in _frames(reply, RS_MAC, SRV_MAC)]
    d = reply.copy()
    d[IP].src, d[IP].dst, d[UDP].sport, d[UDP].dport = VIP, CLIENT, VPORT, 41000
    del d[UDP].chksum
    assert got == [(XDP_REDIRECT, f) for f in _frames(IP(bytes(d)), CLI_MAC, CLIENT_MAC)]
    fn.st.frags.clear()


# --- hairpin -------------------------------------------------------------------------------

def test_hairpin_source_nats_the_real_servers_side(fn):
    """With --hairpin a Masq connection from the real servers' side (here:
    the real server on the client link, connecting to its own service, and
    a client on that link) is source-NATed to the balancer's own address on
    the egress (tun_src, as `xdplb attach` writes it: no local address
    configured); from elsewhere it is plain Masq. Without the flag,
    today's Masq."""
    fn.st.tun_src.put(fn.net["cli_idx"], C.c_uint32(int.from_bytes(a4(CLI_IP), "little")))
    try:
        key = service(fn, rss=(NEAR_RS,), laddrs=(), fwd=IP_VS_CONN_F_MASQ,
                      flags=XDPLB_SVC_F_HAIRPIN)
        own = tcp(NEAR_RS, VIP, 40000, VPORT, smac=NEAR_RS_MAC)
        verdict, out = run(fn, own)
        la, lport = lent(entry(fn, NEAR_RS, 40000))
        assert la == CLI_IP
        assert (verdict, out) == (XDP_TX, rebuilt(own, {
            (Ether, "src"): CLI_MAC, (Ether, "dst"): NEAR_RS_MAC, (IP, "src"): CLI_IP,
            (IP, "dst"): NEAR_RS, (TCP, "sport"): lport, (TCP, "dport"): RPORT}))
        reply = tcp(NEAR_RS, CLI_IP, RPORT, lport, flags="SA", smac=NEAR_RS_MAC, dmac=CLI_MAC)
        assert run(fn, reply) == (XDP_TX, to_client(reply, NEAR_RS, 40000, NEAR_RS_MAC))
        [row] = Control(fn.st).connections()
        assert row[2:8] + row[12:] == (NEAR_RS, 40000, VIP, VPORT, NEAR_RS, RPORT,
                                       ("Hairpin", CLI_IP, lport))
        # a client on the same link: source-NATed too
        run(fn, tcp(CLIENT, VIP, 40001, VPORT))
        assert lent(entry(fn, CLIENT, 40001))[0] == CLI_IP
        # with a local address, that one is used
        fn.apply(config.add_laddr, key, LADDR2, 0)
        run(fn, tcp(CLIENT, VIP, 40002, VPORT))
        assert lent(entry(fn, CLIENT, 40002))[0] == LADDR2
        # without the flag: Masq as today
        fn.edit_service(Service(*key, sched="rr"))
        masq = tcp(CLIENT, VIP, 40003, VPORT)
        assert run(fn, masq) == (XDP_TX, rebuilt(masq, {
            (Ether, "src"): CLI_MAC, (Ether, "dst"): NEAR_RS_MAC, (IP, "dst"): NEAR_RS,
            (TCP, "dport"): RPORT}))
        assert entry(fn, CLIENT, 40003).lport == 0
    finally:
        fn.st.tun_src.put(fn.net["cli_idx"], C.c_uint32(0))


def test_hairpin_leaves_other_clients_alone(fn):
    """A client not on the real servers' side is plain Masq under --hairpin."""
    service(fn, rss=(RS,), laddrs=(LADDR,), fwd=IP_VS_CONN_F_MASQ, flags=XDPLB_SVC_F_HAIRPIN)
    syn = tcp(CLIENT, VIP, 40000, VPORT)
    assert run(fn, syn) == (XDP_REDIRECT, rebuilt(syn, {
        (Ether, "src"): SRV_MAC, (Ether, "dst"): RS_MAC, (IP, "dst"): RS,
        (TCP, "dport"): RPORT}))
    assert entry(fn, CLIENT, 40000).lport == 0 and mappings(fn) == {}
    # ... and a real server on the far side connecting to its own service is
    # source-NATed (its own address: the destination is the client)
    own = tcp(RS, VIP, 40001, VPORT, smac=RS_MAC, dmac=SRV_MAC)
    verdict, out = run(fn, own, "srv")
    la, lport = lent(entry(fn, RS, 40001))
    assert la == LADDR
    assert (verdict, out) == (XDP_TX, rebuilt(own, {
        (Ether, "src"): SRV_MAC, (Ether, "dst"): RS_MAC, (IP, "src"): LADDR, (IP, "dst"): RS,
        (TCP, "sport"): lport, (TCP, "dport"): RPORT}))


# --- port allocation: every CPU at once; exhaustion; reuse ---------------------------------

def _syn_storm(ctl, per_cpu, base_net=10):
    """per_cpu SYNs from distinct clients (10.<base_net+cpu>.x.y, port 5000)
    from one thread pinned to each CPU, started together."""
    cpus = sorted(os.sched_getaffinity(0))
    go = threading.Barrier(len(cpus))
    errors = []

    def storm(cpu):
        try:
            os.sched_setaffinity(0, {cpu})
            with ctl.net["ns"].entered():
                runner = bpfsys.ProgTestRun(ctl.st.prog_fd, 128)
                frames = [bytes(tcp(f"10.{base_net + cpu}.{i >> 8}.{i & 255}", VIP, 5000,
                                    VPORT)) for i in range(per_cpu)]
                go.wait()
                for f in frames:
                    runner.run(f, ingress_ifindex=ctl.net["cli_idx"])
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
    threads = [threading.Thread(target=storm, args=(cpu,)) for cpu in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return len(cpus) * per_cpu


def _check_one_to_one(ctl):
    """Every full-NAT entry has its own mapping, every mapping its entry."""
    entries = {bytes(k): v for k, v in
               ((T.ConnKey.from_buffer_copy(kb), T.Conn.from_buffer_copy(vb))
                for kb, vb in ctl.st.conn_table.raw_items())}
    tuples = {}
    for kb, c in entries.items():
        t = (socket.inet_ntoa(bytes(c.addr)), socket.ntohs(c.port), *lent(c), IPPROTO_TCP)
        assert t not in tuples, f"reply tuple {t} lent twice"
        tuples[t] = kb
    assert mappings(ctl) == tuples
    return len(entries)


def test_port_allocation_on_every_cpu_at_once(fn):
    service(fn)
    sent = _syn_storm(fn, 1500)
    assert _check_one_to_one(fn) == sent
    assert counters(fn) == {"rx": sent, "fwd": sent}


SMALL = ["-DXDPLB_FNAT_PORT_MIN=2000", "-DXDPLB_FNAT_PORT_MAX=2003"]


@pytest.fixture(scope="module")
def small_state(datapath_net):
    """The data path compiled with a 4-port range (2000..2003)."""
    with statemod.private_folder(f"test-{os.getpid()}-fnat4") as folder:
        with loader.open_state(folder, SMALL) as s:
            with datapath_net["ns"].entered():
                for idx in (datapath_net["cli_idx"], datapath_net["srv_idx"]):
                    s.tx_ports.put(idx, s.tx_ports.value_type(idx))
            yield s


@pytest.fixture
def small(small_state, datapath_net):
    c = Control(small_state)
    c.net = datapath_net
    with datapath_net["ns"].entered():
        c.counted = _counters(c)
        yield c
        c.flush()
        small_state.conn_table.clear()
        small_state.fnat_out.clear()


def test_exhaustion_is_counted_and_ports_come_back(small):
    service(small)
    syns = [tcp(CLIENT, VIP, 40000 + i, VPORT) for i in range(6)]
    for syn in syns[:4]:
        assert run(small, syn)[0] == XDP_REDIRECT
    assert sorted(p for _, _, _, p, _ in mappings(small)) == [2000, 2001, 2002, 2003]
    # every port of the one local address is lent: the next SYN is dropped, counted
    assert run(small, syns[4]) == (XDP_DROP, bytes(syns[4]))
    assert entry(small, CLIENT, 40004) is None
    assert counters(small) == {"rx": 5, "fwd": 4, "fnat_no_port": 1}
    # the sweep removes an expired entry and gives its port back
    k = conn_key(CLIENT, 40000)
    c = small.st.conn_table.get(k)
    freed = lent(c)[1]
    c.last_seen = 1
    small.st.conn_table.put(k, c)
    assert small.sweep() == 1
    assert run(small, syns[4])[0] == XDP_REDIRECT
    assert lent(entry(small, CLIENT, 40004))[1] == freed
    # the data path's own expiry too: the expired client's new SYN gets one
    k = conn_key(CLIENT, 40001)
    c = small.st.conn_table.get(k)
    c.last_seen = 1
    small.st.conn_table.put(k, c)
    assert run(small, syns[1])[0] == XDP_REDIRECT
    assert run(small, syns[5])[0] == XDP_DROP
    assert _check_one_to_one(small) == 4


def test_contention_for_few_ports_on_every_cpu(small):
    """Every CPU's SYNs race for the same 4 ports: no tuple lent twice, each
    SYN either lent one or dropped and counted."""
    service(small)
    sent = _syn_storm(small, 300)
    assert _check_one_to_one(small) == 4
    assert counters(small) == {"rx": sent, "fwd": 4, "fnat_no_port": sent - 4}
