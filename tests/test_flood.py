"""A SYN flood from the lab's client must not break an established connection.

The lab (xdplb/lab.py): client -> xdplb on the lb -> rs1, a TCP echo server
on rs1 behind VIP:7000 (Masq). The client opens one connection and exchanges
a line. Then the flood: bpf/bench_fwd.c's bench_inject run with
BPF_F_TEST_XDP_LIVE_FRAMES on the client's eth0 turns out SYNs to the same
service, each from a never-seen source address and port, as fast as this
machine can (generator, xdplb and rs1's stack share one CPU), until three
times the capacity of xdplb's connection LRU has gone through as new
connections. The connection, idle all along (the worst case for an LRU: it
is the least recently used entry), must then still carry a line both ways,
from conns_assured, where its handshake put it.
"""
import ctypes as C
import socket
import sys

import pytest

from conftest import ECHO, lab_connect, lab_echo as echo
from xdplb import structs as S

VIP, PORT, RS1 = "1.2.3.4", 7000, "172.80.0.2"


def connect(client):
    return lab_connect(client, VIP, PORT)


def test_syn_flood_does_not_break_an_established_connection(xlab_lab):
    from xdplb.bench import fwd, pkt
    from xdplb.state import State

    lab = xlab_lab
    lab.adm("-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
    lab.adm("-a", "-t", f"{VIP}:{PORT}", "-r", f"{RS1}:{PORT}", "-m")
    lab.start_server("rs1", [sys.executable, "-c", ECHO, RS1, str(PORT)])
    client, lb = lab.node("client"), lab.node("lb")
    st = State.open(folder=lab.pin_folder())
    b = None
    try:
        sock = connect(client)
        assert echo(sock, b"before the flood\n") == b"before the flood\n"
        cport = sock.getsockname()[1]
        key = S.ConnKey(saddr=(C.c_uint8 * 4)(*socket.inet_aton("10.0.0.2")),
                        daddr=(C.c_uint8 * 4)(*socket.inet_aton(VIP)),
                        sport=socket.htons(cport), dport=socket.htons(PORT), proto=6)
        assert st.conns_assured.get(key) is not None, "the handshake did not assure it"

        b, fds = fwd.compile_gen()
        syn = pkt.tcp_frame("10.0.0.2", VIP, 10000, PORT, pkt.TCP_SYN,
                            smac=client.mac("eth0"), dmac=lb.mac("veth-client"))
        gen = fwd.Gen(b, fds, client, client.ifindex("eth0"), syn, tcp=True)
        svc_slot = st.services.get(S.SvcKey(addr=(C.c_uint8 * 4)(*socket.inet_aton(VIP)),
                                            port=socket.htons(PORT), proto=6)).slot
        conns0 = st.svc_stats.sum(svc_slot).conns
        want = 3 * S.XDPLB_MAX_CONNS
        sent = secs = 0
        while st.svc_stats.sum(svc_slot).conns - conns0 < want and secs < 60:
            n, _, dt = gen.run(250_000)
            sent, secs = sent + n, secs + dt
        flooded = st.svc_stats.sum(svc_slot).conns - conns0
        print(f"\nSYN flood: {sent} frames in {secs:.2f} s ({sent / secs / 1e6:.2f} Mpps "
              f"injected), {flooded} new connections through xdplb "
              f"({flooded / S.XDPLB_MAX_CONNS:.1f} x the conns LRU)")
        assert flooded >= want, f"the flood made only {flooded} connections in {secs:.0f} s"

        assert st.conns_assured.get(key) is not None
        assert st.conns_assured.get(key).state == S.IP_VS_TCP_S_ESTABLISHED
        assert echo(sock, b"after the flood\n") == b"after the flood\n"
        assert st.counters.sum(S.COUNTERS.index("assure_full")) == 0
        sock.close()
        fresh = connect(client)   # and the service still takes new clients
        assert echo(fresh, b"new\n") == b"new\n"
        fresh.close()
    finally:
        if b is not None:
            b.cleanup()
        st.close()
        lab.adm("-D", "-t", f"{VIP}:{PORT}", check=False)
