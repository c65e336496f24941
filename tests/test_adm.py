"""xdplbadm as a subprocess against a private pinned state (XDPLB_PIN_DIR).

Each command runs in a fresh network namespace (`unshare -n`) so nothing it
does (name lookups, the DR neighbour priming datagram) leaves the test.
Every refused command is checked against a snapshot of ALL map contents.
"""
import ctypes as C
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from xdplb import state as statemod
from xdplb import structs as S
from xdplb.control import Control
from xdplb.structs import Alloc, RingKey, SchedPos
from xdplb.keys import svc_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADM = os.path.join(ROOT, ".venv", "bin", "xdplbadm")
CMD = [ADM] if os.path.exists(ADM) else [sys.executable, "-m", "xdplb.adm"]
PROG = ADM if os.path.exists(ADM) else "xdplbadm"
UNSHARE = ["unshare", "-n"] if shutil.which("unshare") else []
TRY = f"Try `{PROG} -h' or '{PROG} --help' for more information.\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpffs)")


# These are control-plane tests: the state is pinned from the real maps.h with
# a pass-through program, so they do not depend on the data path compiling.
STUB = """#include <uapi/linux/bpf.h>
#include "maps.h"
int xdplb_main(struct xdp_md *ctx) { return XDP_PASS; }
"""


def create_stub_state(folder, cflags=()):
    from xdplb import loader

    def compile_stub(cflags=()):
        from bcc import BPF
        b = BPF(text=STUB, cflags=[f"-I{loader.BPF_DIR}", "-Wno-unused-function", *cflags])
        return b, b.load_func(loader.ENTRY, BPF.XDP)

    real = loader.compile_program
    loader.compile_program = compile_stub
    try:
        loader.create_state(folder, cflags)
    finally:
        loader.compile_program = real


@pytest.fixture(scope="module")
def pin():
    folder = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-adm"
    old = os.environ.get("XDPLB_PIN_DIR")
    os.environ["XDPLB_PIN_DIR"] = folder
    create_stub_state(folder)
    yield folder
    statemod.remove(folder)
    if old is None:
        del os.environ["XDPLB_PIN_DIR"]
    else:
        os.environ["XDPLB_PIN_DIR"] = old


def adm(*args, stdin=None):
    p = subprocess.run(UNSHARE + CMD + list(args), input=stdin, capture_output=True,
                       text=True, env=dict(os.environ))
    return p.returncode, p.stdout, p.stderr


def ok(*args, stdin=None):
    rc, out, err = adm(*args, stdin=stdin)
    assert (rc, err) == (0, ""), (args, rc, err)
    return out


def snapshot():
    with Control.open() as ctl:
        return ctl.snapshot()


HEAD = ("IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def dline(addr, fwd, w, a=0, i=0):
    return "  -> %-28s %-7s %-6d %-10d %-10d\n" % (addr, fwd, w, a, i)


@pytest.fixture
def base(pin):
    """A populated table: a wrr TCP service with 3 servers, an rr UDP one."""
    ok("-C")
    ok("-A", "-t", "10.0.0.1:80", "-s", "wrr")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1", "-m", "-w", "3")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.2:8080", "-m")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.3", "-g", "-w", "2")
    ok("-A", "-u", "10.0.0.1:53", "-s", "rr")
    ok("-a", "-u", "10.0.0.1:53", "-r", "10.2.0.1", "-m")
    return pin


def test_empty_listing_without_state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDPLB_PIN_DIR", f"/sys/fs/bpf/xdplb/test-{os.getpid()}-none")
    assert adm() == (0, HEAD, "")
    assert adm("-Ln") == (0, HEAD, "")
    assert adm("-S") == (0, "", "")
    assert adm("-L", "-t", "1.2.3.4:80") == (1, "", "No such service\n")
    assert not os.path.exists(os.environ["XDPLB_PIN_DIR"])


def test_listing_and_save(base):
    out = ok("-Ln")
    assert out == (HEAD + "TCP  10.0.0.1:80 wrr\n" + dline("10.1.0.1:80", "Masq", 3)
                   + dline("10.1.0.2:8080", "Masq", 1) + dline("10.1.0.3:80", "Route", 2)
                   + "UDP  10.0.0.1:53 rr\n" + dline("10.2.0.1:53", "Masq", 1))
    assert ok() == ok("-L")
    assert "TCP  10.0.0.1:http wrr\n" in ok("-L")
    assert ok("-S", "-n") == ("-A -t 10.0.0.1:80 -s wrr\n"
                              "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 3\n"
                              "-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 1\n"
                              "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -g -w 2\n"
                              "-A -u 10.0.0.1:53 -s rr\n"
                              "-a -u 10.0.0.1:53 -r 10.2.0.1:53 -m -w 1\n")
    assert ok("-S").splitlines()[0] == "-A -t 10.0.0.1:http -s wrr"
    assert ok("-Ln", "--nosort").splitlines()[3:7] == [
        "TCP  10.0.0.1:80 wrr", dline("10.1.0.3:80", "Route", 2).rstrip("\n"),
        dline("10.1.0.2:8080", "Masq", 1).rstrip("\n"), dline("10.1.0.1:80", "Masq", 3).rstrip("\n")]
    assert ok("-L", "-n", "-t", "10.0.0.1:53") if False else True
    assert ok("-l", "-n", "-u", "10.0.0.1:53") == (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "UDP  10.0.0.1:53 rr\n" + dline("10.2.0.1:53", "Masq", 1))
    assert ok("-L", "--timeout") == "Timeout (tcp tcpfin udp): 900 120 300\n"
    assert ok("-L", "--daemon") == ""
    assert ok("-L", "-n", "-c") == ("IPVS connection entries\n"
                                    "pro expire state       source             virtual"
                                    "            destination\n")
    st = ok("-Ln", "--stats").splitlines()
    assert st[1] == ("Prot LocalAddress:Port               Conns   InPkts  OutPkts  "
                     "InBytes OutBytes")
    assert st[3] == "TCP  10.0.0.1:80                         0        0        0        0        0"
    th = ok("-Ln", "--thresholds").splitlines()
    assert th[4] == "  -> 10.1.0.1:80                  0          0          0          0         "


def test_edit_and_delete_listings(base):
    ok("-e", "-t", "10.0.0.1:80", "-r", "10.1.0.2:8080", "-m", "-w", "7")
    ok("-e", "-t", "10.0.0.1:80", "-r", "10.1.0.3:9999")           # -g forces port 80, w 1
    ok("-d", "-t", "10.0.0.1:80", "-r", "10.1.0.1")
    ok("-E", "-t", "10.0.0.1:80", "-s", "rr")
    assert ok("-Ln").splitlines()[3:] == [
        "TCP  10.0.0.1:80 rr", dline("10.1.0.2:8080", "Masq", 7).rstrip("\n"),
        dline("10.1.0.3:80", "Route", 1).rstrip("\n"),
        "UDP  10.0.0.1:53 rr", dline("10.2.0.1:53", "Masq", 1).rstrip("\n")]
    ok("-D", "-u", "10.0.0.1:53")
    assert len(ok("-Ln").splitlines()) == 6
    ok("-C")
    assert ok("-Ln") == HEAD
    snap = snapshot()
    assert all(not snap[m] for m in ("services", "dests", "sched_ring", "svc_stats",
                                     "dest_stats", "sched_pos", "svc_dests")), snap
    # of the control plane's bookkeeping only the last destination seq handed
    # out survives -C, so no later destination reuses a seq
    [(_, alloc)] = snap["alloc"]
    assert Alloc.from_buffer_copy(alloc).dest_seq >= 4 and alloc[4:] == bytes(12), snap


def test_zero(base):
    with Control.open() as ctl:
        from xdplb.structs import IpVsStats
        svc = ctl.get_service(6, "10.0.0.1", 80, counts=False)
        ctl.st.svc_stats.put(svc.slot, IpVsStats(5, 10, 0, 1000, 0))
        ctl.st.dest_stats.put(svc.dests[0].slot, IpVsStats(5, 10, 0, 1000, 0))
        udp = ctl.get_service(17, "10.0.0.1", 53, counts=False)
        ctl.st.svc_stats.put(udp.slot, IpVsStats(1, 1, 1, 1, 1))
    n = C.c_int(0)
    del n
    ncpu = len(open("/sys/devices/system/cpu/possible").read()) and \
        __import__("xdplb.bpfsys", fromlist=["x"]).possible_cpus()
    out = ok("-Ln", "--stats").splitlines()
    assert out[3] == "TCP  10.0.0.1:80                    %6d   %6d        0   %6d        0" % (
        5 * ncpu, 10 * ncpu, 1000 * ncpu)
    ok("-Z", "-t", "10.0.0.1:80")
    out = ok("-Ln", "--stats", "--exact").splitlines()
    assert out[3] == "TCP  10.0.0.1:80                         0        0        0        0        0"
    assert out[7] != "UDP  10.0.0.1:53                         0        0        0        0        0"
    ok("-Z")
    out = ok("-Ln", "--stats").splitlines()
    assert out[7] == "UDP  10.0.0.1:53                         0        0        0        0        0"


def test_save_clear_restore_round_trip(base):
    saved = ok("-S", "-n")
    listing = ok("-Ln")
    ok("-C")
    assert ok("-Ln") == HEAD
    rc, out, err = adm("-R", stdin=saved)
    assert (rc, err) == (0, "")
    assert ok("-S", "-n") == saved
    assert ok("-Ln") == listing
    # ipvsadm words are dropped; blank lines skipped
    ok("-C")
    ok("-R", stdin="ipvsadm -A -t 10.9.0.1:80 -s rr\n\n  \nxdplbadm -a -t 10.9.0.1:80 -r 10.9.1.1 -m\n")
    assert ok("-S", "-n") == "-A -t 10.9.0.1:80 -s rr\n-a -t 10.9.0.1:80 -r 10.9.1.1:80 -m -w 1\n"


def test_restore_semantics(base):
    before = snapshot()
    # a comment line: popt's first option is not a command -> try-help, 255
    assert adm("-R", stdin="# comment\n-A -t 10.9.0.1:80 -s rr\n") == (255, "", TRY)
    assert snapshot() == before
    # trailing comment: unexpected argument, exit 2 at once
    assert adm("-R", stdin="-A -t 10.9.0.1:80 -s rr # x\n-A -t 10.9.0.2:80 -s rr\n") == (
        2, "", "unexpected argument #\n")
    assert snapshot() == before
    # kernel-like errors continue; the status is the last line's
    rc, out, err = adm("-R", stdin="-A -t 10.0.0.1:80 -s rr\n-A -t 10.9.0.3:80 -s rr\n")
    assert (rc, err) == (0, "Service already exists\n")
    rc, out, err = adm("-R", stdin="-A -t 10.9.0.4:80 -s rr\n-A -t 10.9.0.4:80 -s rr\n")
    assert (rc, err) == (255, "Service already exists\n")
    # nested -R
    assert adm("-R", stdin="-R\n")[0] == 255


# (args, exit code, stderr) of commands refused as the kernel would refuse
# them. Command-line errors (exit 2, popt's 255) are tests/unit/test_adm_parser.py's,
# which also shows that they are refused before the state is opened.
REFUSED = [
    # kernel-like refusals (255)
    (["-A", "-t", "10.0.0.1:80", "-s", "rr"], 255, "Service already exists\n"),
    (["-A", "-t", "10.9.0.1:80", "-s", "foo"], 255, "Scheduler or persistence engine not found\n"),
    (["-E", "-t", "10.0.0.1:80", "-s", "nosuch"], 255,
     "Scheduler or persistence engine not found\n"),
    (["-E", "-t", "10.9.0.1:80", "-s", "rr"], 255, "No such service\n"),
    (["-D", "-t", "10.9.0.1:80"], 255, "No such service\n"),
    (["-Z", "-u", "10.0.0.1:80"], 255, "No such service\n"),
    (["-a", "-t", "10.9.0.1:80", "-r", "10.1.0.9"], 255, "Service not defined\n"),
    (["-e", "-t", "10.9.0.1:80", "-r", "10.1.0.9"], 255, "Service not defined\n"),
    (["-d", "-t", "10.9.0.1:80", "-r", "10.1.0.9"], 255, "Service not defined\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1", "-m"], 255, "Destination already exists\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.3:81"], 255, "Destination already exists\n"),
    (["-e", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-m"], 255, "No such destination\n"),
    (["-d", "-t", "10.0.0.1:80", "-r", "10.1.0.2"], 255, "No such destination\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-y", "10"], 255,
     "Numerical result out of range\n"),
    (["-a", "-t", "10.0.0.1:80", "-r", "224.0.0.1", "-m"], 255,
     "Invalid operation.  Possibly wrong module version, address not unicast, ...\n"),
    (["--stop-daemon", "master"], 255, "No daemon is running\n"),
    (["-L", "-t", "10.9.0.1:80"], 1, "No such service\n"),
]

UNSUPPORTED = [
    ["-A", "-t", "10.9.0.1:80", "-s", "twos"],
    ["-A", "-u", "10.9.0.1:53", "-s", "rr", "-o"],
    ["-A", "-t", "10.9.0.1:80", "-s", "rr", "--pe", "sip"],
    ["-a", "-t", "10.0.0.1:80", "-r", "[2001:db8::9]:80", "-i", "--tun-type", "gre"],
    ["-A", "--sctp-service", "10.9.0.1:80", "-s", "rr"],
    ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-i", "--tun-type", "gre"],
    ["-e", "-t", "10.0.0.1:80", "-r", "10.1.0.1", "-i", "--tun-type", "gre", "--tun-csum"],
    ["--start-daemon", "master"],
]


def _check_unchanged(before, args):
    after = snapshot()
    assert after == before, f"{args} changed the maps"


def test_refused_commands_change_nothing(base):
    before = snapshot()
    for args, code, err in REFUSED:
        rc, out, e = adm(*args)
        assert (rc, e) == (code, err), args
        _check_unchanged(before, args)


def test_unsupported_is_refused_clearly(base):
    before = snapshot()
    for args in UNSUPPORTED:
        rc, out, err = adm(*args)
        assert rc == 255, args
        assert err.startswith("xdplb: ") and "not supported yet" in err, (args, err)
        _check_unchanged(before, args)


def test_fwmark_services_are_refused_with_the_reason(base):
    """-f cannot work at XDP (no skb, no mark): refused, and the message says why."""
    before = snapshot()
    for args in (["-A", "-f", "1", "-s", "rr"], ["-A", "-f", "7", "-s", "wlc", "-p"]):
        rc, out, err = adm(*args)
        assert rc == 255 and out == "", args
        assert err.startswith("xdplb: firewall-mark services (-f) cannot work") and \
            "mark" in err and "XDP" in err, err
        _check_unchanged(before, args)


@pytest.mark.parametrize("damage", ["layout", "missing map"])
def test_incompatible_state_is_refused_and_detach_removes_it(monkeypatch, damage):
    """A state pinned by another layout (its layout version, or a map it lacks)
    is refused by every command, saying what to do; `xdplb detach` removes it."""
    from conftest import xdplb_argv
    folder = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-old"
    monkeypatch.setenv("XDPLB_PIN_DIR", folder)
    create_stub_state(folder)
    try:
        if damage == "layout":
            with statemod.State(folder) as st:
                st.layout.put(0, C.c_uint32(1))
            why = f"pin layout 1, this xdplb uses {S.XDPLB_LAYOUT_VERSION}"
        else:
            os.unlink(os.path.join(folder, "alloc"))
            why = "it has no alloc map"
        err = (f"xdplb: state {folder} was created by an incompatible xdplb ({why}); "
               "run `xdplb detach` to remove it\n")
        for args in (["-Ln"], ["-A", "-t", "10.9.0.1:80"], ["-R"]):
            assert adm(*args, stdin="-A -t 10.9.0.1:80\n") == (255, "", err), args
        p = subprocess.run(UNSHARE + xdplb_argv("detach"), capture_output=True, text=True,
                           env=dict(os.environ))
        assert p.returncode == 0 and f"unpinned xdplb state {folder}" in p.stdout, p.stderr
        assert not os.path.exists(folder)
    finally:
        statemod.remove(folder)


def test_option_forms(base):
    """popt: bundled short options, attached arguments, long options with '='."""
    ok("-At10.9.0.1:80", "-srr")
    ok("--add-server", "--tcp-service=10.9.0.1:80", "--real-server", "10.9.1.1:8080",
       "--masquerading", "--weight=4")
    assert "-a -t 10.9.0.1:80 -r 10.9.1.1:8080 -m -w 4\n" in ok("-Sn")
    ok("-D", "-t", "10.9.0.1:80")


def data_path_picks(ctl, key, n):
    """What the XDP program does for n new connections (bpf/xdplb.h)."""
    out = []
    for _ in range(n):
        svc = ctl.st.services.get(svc_key(*key))
        p = ctl.st.sched_pos.get(svc.slot).pos
        ctl.st.sched_pos.put(svc.slot, SchedPos(p + 1))
        if svc.ring_len == 0:
            out.append(None)
            continue
        m = p - svc.ring_base
        idx = m if m < svc.ring_prefix else svc.ring_prefix + (m - svc.ring_prefix) % (
            svc.ring_len - svc.ring_prefix)
        slot = ctl.st.sched_ring.get(RingKey(svc.slot, svc.ring_gen | idx)).value
        d = ctl.st.dests.get(slot)
        out.append(socket.inet_ntoa(bytes(d.addr)).rsplit(".", 1)[1])
    return out


def test_schedule_through_maps_follows_kernel(pin):
    """docs/ipvs-behaviour.md §5.3, first wrr row, plus changes in the middle, through the
    CLI and the maps."""
    ok("-C")
    ok("-A", "-t", "10.5.0.1:80", "-s", "wrr")
    key = (6, "10.5.0.1", 80)
    for host, w in (("1", 3), ("2", 1), ("3", 1)):          # A, B, C
        ok("-a", "-t", "10.5.0.1:80", "-r", f"10.6.0.{host}", "-m", "-w", str(w))
    with Control.open() as ctl:
        assert data_path_picks(ctl, key, 8) == ["3", "2", "1", "1", "1", "3", "2", "1"]
    # kernel: -e resets cl to the head; cw stays 1 -> one pass at cw=1 from the head
    ok("-e", "-t", "10.5.0.1:80", "-r", "10.6.0.2", "-m", "-w", "2")
    with Control.open() as ctl:
        got = data_path_picks(ctl, key, 9)
    assert got == ["3", "2", "1", "1", "2", "1", "3", "2", "1"]
    ok("-E", "-t", "10.5.0.1:80", "-s", "rr")
    with Control.open() as ctl:
        assert data_path_picks(ctl, key, 4) == ["3", "2", "1", "3"]
    # rr: pointer on C (.3); deleting it moves the pointer back to the head
    ok("-d", "-t", "10.5.0.1:80", "-r", "10.6.0.3")
    with Control.open() as ctl:
        assert data_path_picks(ctl, key, 3) == ["2", "1", "2"]
    ok("-e", "-t", "10.5.0.1:80", "-r", "10.6.0.1", "-m", "-w", "0")
    ok("-e", "-t", "10.5.0.1:80", "-r", "10.6.0.2", "-m", "-w", "0")
    with Control.open() as ctl:
        assert data_path_picks(ctl, key, 2) == [None, None]
        svc = ctl.st.services.get(svc_key(*key))
        assert svc.ring_len == 0
    ok("-C")


def test_weights_up_to_int_max(base):
    """Debian 12's ipvsadm takes weights up to 2147483647 and shows them as given;
    the list and hash schedulers take any weight, a wrr ring past its size is
    refused saying why."""
    ok("-E", "-t", "10.0.0.1:80", "-s", "wlc")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.4", "-m", "-w", "65536")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.5", "-m", "-w", "2147483647")
    assert adm("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.6", "-m", "-w", "2147483648")[2] == \
        "illegal weight specified\n"
    listing = ok("-Ln")
    assert dline("10.1.0.4:80", "Masq", 65536) + dline("10.1.0.5:80", "Masq", 2147483647) \
        in listing
    saved = ok("-S", "-n")
    assert "-a -t 10.0.0.1:80 -r 10.1.0.4:80 -m -w 65536\n" in saved
    assert "-a -t 10.0.0.1:80 -r 10.1.0.5:80 -m -w 2147483647\n" in saved
    for sched in ("mh", "sh", "lc", "sed", "nq", "fo", "ovf", "lblc", "lblcr", "dh", "rr"):
        ok("-E", "-t", "10.0.0.1:80", "-s", sched)
    before = snapshot()
    rc, _, err = adm("-E", "-t", "10.0.0.1:80", "-s", "wrr")
    assert rc == 255 and "use smaller weights or weights with a common divisor" in err
    assert snapshot() == before
    ok("-C")
    ok("-R", stdin=saved)
    assert ok("-S", "-n") == saved


def test_conn_counts_and_connection_listing(base):
    """ActiveConn/InActConn and -L -c come from the conns map (IN entries only,
    expired ones skipped by the IPVS timeout of their state)."""
    from xdplb.conns import now_ns
    from xdplb.structs import Conn, ConnKey

    def ip(a):
        return (C.c_uint8 * 4)(*socket.inet_aton(a))

    with Control.open() as ctl:
        svc = ctl.get_service(6, "10.0.0.1", 80, counts=False)
        d = {x.addr: x for x in svc.dests}["10.1.0.1"]
        now = now_ns()
        entries = [  # (client port, state, age s, dir)
            (1001, 1, 5, 0),      # ESTABLISHED: active
            (1002, 3, 5, 0),      # SYN_RECV: active
            (1003, 4, 5, 0),      # FIN_WAIT: inactive
            (1004, 6, 20, 0),     # CLOSE but older than its 10 s: gone
        ]
        for cport, st, age, direction in entries:
            k = ConnKey(ip("192.168.10.5"), ip("10.0.0.1"), socket.htons(cport), socket.htons(80), 6)
            v = Conn(ip("10.1.0.1"), socket.htons(80), direction, 0, d.slot, svc.slot,
                     state=st, last_seen=now - age * 10**9)
            ctl.st.conn_table.put(k, v)
        assert ctl.st.services.get(svc_key(6, "10.0.0.1", 80)) is not None
        counts = ctl.conn_counts()
        assert counts == {d.slot: [2, 1, 0]}, (counts, d.slot, len(list(ctl.st.conn_table.keys())))
    out = ok("-Ln")
    assert dline("10.1.0.1:80", "Masq", 3, 2, 1) in out
    conns = ok("-Lnc").splitlines()
    assert conns[0:2] == ["IPVS connection entries",
                          "pro expire state       source             virtual            destination"]
    # expire = state timeout - age (5 s, give or take a second of test run time)
    rows = sorted((r[:4] + r[11:], r[4:11]) for r in conns[2:])
    assert [r for r, _ in rows] == [
        "TCP ESTABLISHED 192.168.10.5:1001  10.0.0.1:80        10.1.0.1:80",
        "TCP FIN_WAIT    192.168.10.5:1003  10.0.0.1:80        10.1.0.1:80",
        "TCP SYN_RECV    192.168.10.5:1002  10.0.0.1:80        10.1.0.1:80"]
    assert [e for _, e in rows] in (["14:55  ", "01:55  ", "00:55  "],
                                    ["14:54  ", "01:54  ", "00:54  "])
    with Control.open() as ctl:
        ctl.st.conn_table.clear()


def test_rate_samples_one_second(base):
    """Without `xdplb daemon` (no current estimates), --rate samples the
    counters for a second and says so on stderr, stdout staying ipvsadm's."""
    t = time.perf_counter()
    rc, out, err = adm("-Ln", "--rate")
    assert time.perf_counter() - t >= 1.0
    assert rc == 0 and err == (f"{PROG}: no rate estimator is running (xdplb daemon): the "
                               "rates are the counters' change over the last second\n")
    out = out.splitlines()
    assert out[1] == ("Prot LocalAddress:Port                 CPS    InPPS   OutPPS    "
                      "InBPS   OutBPS")
    assert out[3] == "TCP  10.0.0.1:80                         0        0        0        0        0"
