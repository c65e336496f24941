"""The rate estimator against the real data path: traffic at a known rate
through BPF_PROG_TEST_RUN, counted by the compiled program, estimated as
the kernel's ip_vs_est.c does, shown by `xdplbadm -L --rate`, reset by -Z;
and `xdplb daemon` running the periods itself.

The periods of the first tests are run by the test (estimator.tick), each
after one period's traffic: what they check does not depend on timing.
"""
import os
import signal
import subprocess
import time

import pytest
from conftest import VENV_BIN, xdplb_argv
from packets import udp
from scapy.layers.inet import IP

from xdplb import bpfsys, estimator, journal, loader
from xdplb import state as statemod
from xdplb.control import Control
from xdplb.estimator import SVC, estimate, shown
from xdplb.model import IPPROTO_UDP, Destination, Service, Stats
from xdplb.structs import IP_VS_CONN_F_MASQ

VIP, VPORT, RS, RPORT = "10.0.0.100", 53, "172.80.0.2", 5353
PER_PERIOD = 600            # datagrams per 2 s period: 300 packets/s
FRAME = udp("10.0.0.2", VIP, 40000, VPORT, payload=b"x" * 100)
L3 = len(FRAME[IP])
XDP_REDIRECT = 4


@pytest.fixture(scope="module")
def rates(datapath_net):
    """A compiled state of its own with one Masq UDP service (one server)."""
    folder = f"test-{os.getpid()}-rates"
    with statemod.private_folder(folder) as path:
        with loader.open_state(path) as st:
            with datapath_net["ns"].entered():
                for idx in (datapath_net["cli_idx"], datapath_net["srv_idx"]):
                    st.tx_ports.put(idx, st.tx_ports.value_type(idx))
            ctl = Control(st)
            ctl.add_service(Service(IPPROTO_UDP, VIP, VPORT, sched="rr"))
            ctl.add_dest((IPPROTO_UDP, VIP, VPORT),
                         Destination(RS, RPORT, IP_VS_CONN_F_MASQ, 1))
            yield ctl, datapath_net


def traffic(ctl, net, n=PER_PERIOD):
    """n datagrams of one flow, each its own run (a repeated run would see the
    frame its predecessor rewrote)."""
    run = bpfsys.ProgTestRun(ctl.st.prog_fd, len(FRAME))
    with net["ns"].entered():
        for _ in range(n):
            verdict, _, _ = run.run(bytes(FRAME), ingress_ifindex=net["cli_idx"])
            assert verdict == XDP_REDIRECT, verdict     # forwarded to the real server


def period(ctl):
    with journal.locked(ctl.st):
        estimator.tick(ctl.st)


def adm(folder, *args):
    env = dict(os.environ, XDPLB_PIN_DIR=folder)
    p = subprocess.run([os.path.join(VENV_BIN, "xdplbadm"), *args], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout, p.stderr


def rate_line(stats):
    return "UDP  %-28s %8d %8d %8d %8d %8d" % (f"{VIP}:{VPORT}", *stats)


def test_known_rate_within_the_estimators_error_then_zero(rates):
    ctl, net = rates
    ctl.zero()
    period(ctl)                      # the daemon's first period: estimators start here
    model_avg, last = (0,) * 5, estimator.counters(ctl.st.svc_stats, ctl.services()[0].slot)
    for n in range(1, 13):
        traffic(ctl, net)
        period(ctl)
        svc = ctl.services(stats=True)[0]
        now = svc.stats
        # the data path counted exactly the traffic sent
        assert now.inpkts - last.inpkts == PER_PERIOD
        assert now.inbytes - last.inbytes == PER_PERIOD * L3
        model_avg = estimate(model_avg, last, now)
        last = now
        est = estimator.load(ctl.st)
        got = est.rate(SVC, svc.slot, svc.seq)
        assert got == shown(model_avg)          # the kernel's arithmetic, bit for bit
        # within the estimator's error: (3/4)^n of the rate, plus rounding
        for value, rate in ((got.inpkts, PER_PERIOD / 2), (got.inbytes, PER_PERIOD * L3 / 2)):
            assert abs(value - rate) <= rate * 0.75 ** n + 1, (n, value, rate)
    assert got.inpkts == 290 and got.conns == 0      # 300/s after 12 periods: 3% short
    out, err = adm(ctl.folder, "-Ln", "--rate")
    assert err == ""                                 # the estimates are current
    assert out.splitlines()[3] == rate_line(got)
    assert out.splitlines()[4].split()[1:] == [f"{RS}:{RPORT}", *map(str, got)]
    # -Z: the estimates read 0 at once (ip_vs_zero_estimator) ...
    adm(ctl.folder, "-Z")
    out, err = adm(ctl.folder, "-Ln", "--rate")
    assert (out.splitlines()[3], err) == (rate_line(Stats()), "")
    # ... and the next period starts from the zeroed counters: one period's traffic
    traffic(ctl, net)
    period(ctl)
    out, _ = adm(ctl.folder, "-Ln", "--rate")
    first = shown(estimate((0,) * 5, (0,) * 5, (0, PER_PERIOD, 0, PER_PERIOD * L3, 0)))
    assert first.inpkts == 75                        # a quarter of 300/s
    assert out.splitlines()[3] == rate_line(first)


def test_the_daemon_runs_the_periods(rates):
    ctl, net = rates
    folder = ctl.folder
    env = dict(os.environ, XDPLB_PIN_DIR=folder)
    proc = subprocess.Popen(xdplb_argv("daemon"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def ticks():
            return estimator.load(ctl.st).ticks

        def wait_ticks(n):
            deadline = time.monotonic() + 30
            while ticks() < n:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the daemon ran no period"
                time.sleep(0.1)

        start = ticks()
        wait_ticks(start + 1)
        traffic(ctl, net)
        wait_ticks(ticks() + 1)
        out, err = adm(folder, "-Ln", "--rate")
        inpps = int(out.splitlines()[3].split()[3])
        assert err == "" and inpps > 0, out
        est = estimator.load(ctl.st)
        assert est.fresh()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    # without the daemon the estimates go stale: --rate samples and says so on stderr
    time.sleep(max(0, (est.tick_ns + estimator.STALE_NS - time.monotonic_ns()) / 1e9) + 0.1)
    out, err = adm(folder, "-Ln", "--rate")
    assert out.splitlines()[3] == rate_line(Stats())
    assert err == (f"{os.path.join(VENV_BIN, 'xdplbadm')}: no rate estimator is running "
                   "(xdplb daemon): the rates are the counters' change over the last second\n")
