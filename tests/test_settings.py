"""IPVS's settings that the data path follows (`xdplb set`), packet by packet
through BPF_PROG_TEST_RUN on the real program configured through the control
API: sloppy_tcp, expire_nodest_conn, expire_quiescent_template, and each
one's kernel default; then `xdplb set` / `xdplb show` themselves."""
import os
import subprocess

import pytest

from conftest import xdplb_argv
from packets import tcp
from test_sched_datapath import RS, RPORT, SVC, VIP, VPORT, backend, run, setup
from xdplb import structs as T
from xdplb.model import SETTINGS, Destination, XdplbError

CLIENT = "10.0.0.2"
XDP_DROP, XDP_PASS = 1, 2


@pytest.fixture
def vs(ctl):
    """conftest's control over the real state, the settings put back to the
    kernel's defaults afterwards."""
    try:
        yield ctl
    finally:
        for name, (_, default) in SETTINGS.items():
            ctl.set_setting(name, default)


def _conn(vs, cport):
    return [c for c in vs.connections() if c[3] == cport]


def test_defaults_are_the_kernels(vs):
    assert vs.settings() == {name: default for name, (_, default) in SETTINGS.items()}
    assert vs.settings()["conn_reuse_mode"] == 1


def test_sloppy_tcp_schedules_a_mid_stream_packet(vs):
    setup(vs, "mh", [(0, 1), (1, 1), (2, 1)])
    ack = tcp(CLIENT, VIP, 30000, VPORT, flags="A")
    verdict, out = run(vs, ack)
    assert (verdict, out) == (XDP_PASS, bytes(ack))       # IPVS: a SYN only
    assert _conn(vs, 30000) == []
    vs.set_setting("sloppy_tcp", 1)
    assert backend(*run(vs, ack)) in RS
    [row] = _conn(vs, 30000)
    assert row[8] == "ESTABLISHED"                          # sNO + ack -> sES, as the kernel
    rst = tcp(CLIENT, VIP, 30001, VPORT, flags="R")
    assert run(vs, rst) == (XDP_PASS, bytes(rst))          # never on a RST
    # the same tuple to a balancer configured the same (mh) goes to the same server
    first = backend(*run(vs, tcp(CLIENT, VIP, 30002, VPORT, flags="PA")))
    vs.st.conn_table.clear()
    assert backend(*run(vs, tcp(CLIENT, VIP, 30002, VPORT, flags="A"))) == first


def test_expire_nodest_conn_ends_the_connection_instead_of_dropping(vs):
    setup(vs, "rr", [(0, 1), (1, 1)])
    syn = tcp(CLIENT, VIP, 31000, VPORT)
    gone = backend(*run(vs, syn))
    vs.delete_dest(SVC, gone, RPORT)
    ack = tcp(CLIENT, VIP, 31000, VPORT, flags="A")
    assert run(vs, ack)[0] == XDP_DROP                     # the default: dropped, kept
    assert vs.st.counters.sum(T.COUNTERS.index("dest_gone")) >= 1
    vs.set_setting("expire_nodest_conn", 1)
    assert run(vs, ack) == (XDP_PASS, bytes(ack))          # ended: the stack resets it
    assert all(row[6] != gone for row in vs.connections())
    other = backend(*run(vs, syn))                         # a SYN makes a new one
    assert other in RS and other != gone


def test_expire_quiescent_template_reschedules_a_persistent_client(vs):
    setup(vs, "rr", [(0, 1), (1, 1)], flags=T.IP_VS_SVC_F_PERSISTENT, timeout=300)
    first = backend(*run(vs, tcp(CLIENT, VIP, 32000, VPORT)))
    vs.edit_dest(SVC, Destination(first, RPORT, fwd=0, weight=0))
    assert backend(*run(vs, tcp(CLIENT, VIP, 32001, VPORT))) == first   # the default
    vs.set_setting("expire_quiescent_template", 1)
    moved = backend(*run(vs, tcp(CLIENT, VIP, 32002, VPORT)))
    assert moved in RS and moved != first
    assert backend(*run(vs, tcp(CLIENT, VIP, 32003, VPORT))) == moved  # its new template


def test_bad_settings_are_refused_and_change_nothing(vs):
    before = vs.settings()
    for name, value in (("sloppy_udp", 1), ("sloppy_tcp", 2)):
        with pytest.raises(XdplbError):
            vs.set_setting(name, value)
    assert vs.settings() == before


def test_set_and_show_commands(cli_attached):
    cli_netns = cli_attached
    env = dict(os.environ)
    env.pop("XDPLB_PIN_DIR", None)
    assert cli_netns.xdplb("set", "sloppy_tcp", "1").returncode == 0
    shown = cli_netns.xdplb("show")
    assert shown.returncode == 0
    assert shown.stdout.splitlines() == ["conn_reuse_mode 1", "expire_nodest_conn 0",
                                         "expire_quiescent_template 0", "sloppy_tcp 1"]
    bad = cli_netns.xdplb("set", "sloppy_tcp", "2")
    assert bad.returncode == 2 and "0<=x<=1" in bad.stderr
    unknown = cli_netns.xdplb("set", "nosuch", "1")
    assert unknown.returncode == 2 and "'nosuch' is not one of" in unknown.stderr
    assert cli_netns.xdplb("show").stdout == shown.stdout
    none = subprocess.run(cli_netns.cmd(xdplb_argv("show")), capture_output=True, text=True,
                          env=dict(env, XDPLB_PIN_DIR="/sys/fs/bpf/xdplb/none-such"))
    assert none.returncode == 1
