"""Failover that keeps connections (issue 14): two balancers with the same
configuration (mh, Route) in front of three real servers; the client's route
to the VIP moves from one to the other mid-stream, as VRRP moving the VIP
would. The standby has no entry for the connection: with sloppy_tcp off it
passes the stream's packets to its stack (which has no VIP: the stream
stalls, as with IPVS); once sloppy_tcp is on, mh schedules them to the same
real server the first balancer chose, and TCP's retransmissions carry the
stream on: no reset, no lost byte.

    client ca 10.1.0.2 --- lba 10.1.0.1      (lba, lbb: xdplb, -s mh, -g)
           cb 10.2.0.2 --- lbb 10.2.0.1
    lbX --- rsN (172.80.0.N on both its links, the VIP on lo)
    rsN replies to the client directly through lbb's stack (DR).
"""
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import ECHO, EchoStream, _need_root_and_bpffs, xdplb_argv
from xdplb import topology as T

VIP, PORT = "1.2.3.4", 7300
RSS = {f"rs{n}": f"172.80.0.{n + 1}" for n in (1, 2, 3)}
LBS = {"lba": ("ca", "10.1.0"), "lbb": ("cb", "10.2.0")}


def _mac(lb, rs):
    return f"02:00:00:0{list(LBS).index(lb) + 1}:0{rs[-1]}:01"


def _topology():
    veths, routes, neighs, sysctls = [], [], [], []
    for lb, (cdev, net) in LBS.items():
        veths.append(T.Veth(T.End("client", cdev, addrs=(f"{net}.2/24",), faces_xdp=True),
                            T.End(lb, "c", addrs=(f"{net}.1/24",))))
        for rs, addr in RSS.items():
            veths.append(T.Veth(T.End(lb, f"to-{rs}"),
                                T.End(rs, f"from-{lb}", mac=_mac(lb, rs), addrs=(f"{addr}/32",),
                                      faces_xdp=True)))
            routes.append(T.Route(lb, f"{addr}/32", dev=f"to-{rs}"))
            neighs.append(T.Neigh(lb, f"to-{rs}", addr, _mac(lb, rs)))
        sysctls += [T.Sysctl(lb, "net.ipv4.ip_forward", 1),
                    T.Sysctl(lb, "net.ipv4.conf.all.rp_filter", 0)]
    routes += [T.Route("client", f"{VIP}/32", via="10.1.0.1"),
               T.Route("lbb", "10.1.0.2/32", via="10.2.0.2")]
    for rs in RSS:   # replies to the client leave through lbb's stack
        routes.append(T.Route(rs, "default", via="10.2.0.1", dev="from-lbb", onlink=True))
        sysctls += [T.Sysctl(rs, f"net.ipv4.conf.{k}.{s}", v) for k in ("all", "default")
                    for s, v in (("arp_ignore", 1), ("arp_announce", 2), ("rp_filter", 0))]
    sysctls += [T.Sysctl("client", "net.ipv4.conf.all.rp_filter", 0),
                T.Sysctl("client", "net.ipv4.conf.default.rp_filter", 0)]
    return T.Topology(nodes=("client", *LBS, *RSS), veths=tuple(veths), routes=tuple(routes),
                      neighbours=tuple(neighs), sysctls=tuple(sysctls))


@pytest.fixture
def twin():
    """The topology, xdplb on both balancers (same rules), echo servers on
    the VIP of each real server; everything removed afterwards (xdplb's
    state while its namespaces still exist)."""
    _need_root_and_bpffs()
    procs = []
    with T.build(_topology(), f"xf{uuid.uuid4().hex[:5]}") as net:
        try:
            for rs in RSS:
                ns = net.ns[rs]
                ns.addr("add", "lo", f"{VIP}/32")
                procs.append(subprocess.Popen(ns.cmd([sys.executable, "-c", ECHO, VIP, str(PORT)]),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              start_new_session=True))
            for lb in LBS:
                ns = net.ns[lb]
                run(ns, xdplb_argv("attach", "c", *(f"to-{rs}" for rs in RSS)))
                run(ns, [sys.executable, "-m", "xdplb.adm", "-A", "-t", f"{VIP}:{PORT}", "-s", "mh"])
                for addr in RSS.values():
                    run(ns, [sys.executable, "-m", "xdplb.adm", "-a", "-t", f"{VIP}:{PORT}",
                             "-r", f"{addr}:{PORT}", "-g"])
            yield net
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=10)
            for lb in LBS:
                run(net.ns[lb], xdplb_argv("detach"), check=False)


def run(ns, argv, check=True):
    env = dict(os.environ)
    env.pop("XDPLB_PIN_DIR", None)
    done = subprocess.run(ns.cmd(argv), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 or not check, done.stderr
    return done


def test_sloppy_tcp_and_mh_carry_a_stream_across_a_failover(twin):
    client = twin.ns["client"]
    stream = EchoStream(client, VIP, PORT, block=4096, timeout=30)
    try:
        assert stream.progress(1.0) > 0 and stream.error is None
        rows = run(twin.ns["lba"], [sys.executable, "-m", "xdplb.adm", "-L", "-c", "-n"]).stdout
        [chosen] = [line.split()[5] for line in rows.splitlines() if f":{PORT}" in line]
        client.route("replace", f"{VIP}/32", via="10.2.0.1")          # the failover
        stream.progress(0.5)        # a block sent through the first one may still come back
        assert stream.progress(3.0) == 0, "the standby carried it without sloppy_tcp"
        run(twin.ns["lbb"], xdplb_argv("set", "sloppy_tcp", "1"))
        deadline = time.monotonic() + 30
        while stream.progress(0.5) == 0:
            assert stream.error is None, repr(stream.error)
            assert time.monotonic() < deadline, "the stream did not resume on the standby"
        assert stream.progress(1.0) > 0 and stream.error is None
        rows = run(twin.ns["lbb"], [sys.executable, "-m", "xdplb.adm", "-L", "-c", "-n"]).stdout
        assert [line.split()[5] for line in rows.splitlines() if f":{PORT}" in line] == [chosen]
        print(f"\nfailover: {stream.echoed} bytes echoed intact, to {chosen} on both")
    finally:
        stream.close()
    assert stream.error is None, repr(stream.error)
