"""Every scheduler with real connections through a private namespace lab.

client 10.0.0.2 -> VIP 1.2.3.4 (xdplb on the lb) -> rs1..rs3 (172.80.0.2..4,
"This is service #1..#3"). Each test configures the service with the real
`xdplbadm`, opens N HTTP connections one after the other and compares the
answering backends with the kernel's algorithm (xdplb/sched.py's reference
ports, which follow docs/ipvs-behaviour.md §5): a finished connection stays in
the table as an inactive one (FIN_WAIT/TIME_WAIT/CLOSE), so it weighs in the
next decision exactly as in the kernel.
"""
import re
import socket
import subprocess
import time

import pytest

from xdplb import sched as S

VIP = "1.2.3.4"
SVC = f"{VIP}:80"
RS = {1: "172.80.0.2", 2: "172.80.0.3", 3: "172.80.0.4"}
CLIENT = "10.0.0.2"
N = 7

# (name, [(backend, weight)] in the order they are added)
CONFIGS = [
    ("w311", [(1, 3), (2, 1), (3, 1)]),
    ("w13", [(1, 1), (2, 3)]),
    ("w011", [(1, 0), (2, 1), (3, 1)]),
    ("w113_reversed", [(3, 1), (2, 1), (1, 3)]),
]


@pytest.fixture
def lab(xlab_lab):
    """The module's lab, no services, default timeouts, and no connection
    entries left by an earlier test (IPVS would drop a new SYN that hits a
    FIN_WAIT entry of a removed destination, so a reused client port would
    make an earlier test's leftovers change this one's answers)."""
    from xdplb.state import State
    xlab_lab.adm("-C")
    xlab_lab.adm("--set", "900", "120", "300")
    st = State.open(folder=xlab_lab.pin_folder())
    try:
        st.conn_table.clear()
        st.lblc.clear()
    finally:
        st.close()
    return xlab_lab


def answers(lab, n, *extra):
    out = []
    for _ in range(n):
        body = lab.curl(f"http://{VIP}/", *extra, timeout=2)
        m = re.fullmatch(r"This is service #(\d)\n", body)
        out.append(int(m.group(1)) if m else None)
    return out


def setup(lab, sched, added, *svc_opts):
    lab.adm("-A", "-t", SVC, "-s", sched, *svc_opts)
    for n, w in added:
        lab.adm("-a", "-t", SVC, "-r", f"{RS[n]}:80", "-m", "-w", str(w))
    return list(reversed(added))          # the kernel's list: newest first


def expected_list(sched, dests, n):
    """Kernel picks for n sequential connections, each finished (inactive)
    before the next one is scheduled."""
    counts = {b: [0, 0] for b, _ in dests}
    cache = None
    out = []
    for _ in range(n):
        if sched in ("lblc", "lblcr") and cache is not None:
            pick = cache                   # cached: available, weight > 0, not overloaded
        else:
            pick = S.list_pick(sched, [(b, w, *counts[b], 0) for b, w in dests])
            cache = pick
        out.append(pick)
        if pick is not None:
            counts[pick][1] += 1
    return out


def _ip(a):
    return int.from_bytes(socket.inet_aton(a), "big")


def expected_hash(sched, dests, port=0):
    weights = dict(dests)
    if sched == "sh":
        table = S.sh_table(dests)
        pick = table[S.sh_hashkey(_ip(CLIENT), port)]
    elif sched == "dh":
        table = S.dh_table(dests)
        pick = table[S.dh_hashkey(_ip(VIP))]
    else:
        table = S.mh_table([(b, _ip(RS[b]), 80, w) for b, w in dests])
        if not table:
            return None
        pick = table[S.mh_hashkey(_ip(CLIENT), port, S.MH_HASH1) % len(table)]
    return pick if weights[pick] > 0 else None


@pytest.mark.parametrize("cfg", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("sched", ["lc", "wlc", "sed", "nq", "fo", "ovf", "lblc", "lblcr"])
def test_list_schedulers_real_connections(lab, sched, cfg):
    dests = setup(lab, sched, cfg)
    want = expected_list(sched, dests, N)
    assert answers(lab, N) == want, (sched, dests)
    # every finished connection is counted, as InActConn, on its backend
    listing = lab.adm("-L", "-n").stdout
    for b, _ in dests:
        m = re.search(rf"^  -> {re.escape(RS[b])}:80\s+Masq\s+\d+\s+(\d+)\s+(\d+)", listing, re.M)
        assert m and (int(m.group(1)), int(m.group(2))) == (0, want.count(b)), listing


def test_wlc_is_the_default(lab):
    lab.adm("-A", "-t", SVC)
    for n, w in [(1, 3), (2, 1), (3, 1)]:
        lab.adm("-a", "-t", SVC, "-r", f"{RS[n]}:80", "-m", "-w", str(w))
    assert re.search(rf"^TCP  {re.escape(SVC)} wlc\s*$", lab.adm("-L", "-n").stdout, re.M)
    assert answers(lab, N) == expected_list("wlc", [(3, 1), (2, 1), (1, 3)], N)


@pytest.mark.parametrize("cfg", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("sched", ["sh", "dh", "mh"])
def test_hash_schedulers_real_connections(lab, sched, cfg):
    dests = setup(lab, sched, cfg)
    want = expected_hash(sched, dests)
    assert answers(lab, 4) == [want] * 4, (sched, dests)


@pytest.mark.parametrize("sched", ["sh", "mh"])
def test_hash_port_flag_uses_the_client_port(lab, sched):
    dests = setup(lab, sched, [(1, 1), (2, 1), (3, 1)], "-b", f"{sched}-port")
    assert f"{sched} ({sched}-port)" in lab.adm("-L", "-n").stdout
    got, want = [], []
    # below the ephemeral range (32768-60999): an earlier curl of this module may
    # have left the same client tuple in TIME_WAIT, and then this connect fails
    base = 21000 if sched == "sh" else 22000
    for port in range(base, base + 12):
        got += answers(lab, 1, "--local-port", str(port))
        want.append(expected_hash(sched, dests, port))
        time.sleep(0.01)
    assert got == want
    assert len(set(got)) > 1


def test_mh_fallback_skips_a_quiesced_backend(lab):
    """mh: quiescing keeps the table (last_weight); without mh-fallback the
    client of a weight-0 backend gets nothing, with it another backend."""
    dests = setup(lab, "mh", [(1, 1), (2, 1), (3, 1)])
    mine = expected_hash("mh", dests)
    assert answers(lab, 2) == [mine, mine]
    lab.adm("-e", "-t", SVC, "-r", f"{RS[mine]}:80", "-m", "-w", "0")
    assert answers(lab, 1) == [None]
    lab.adm("-E", "-t", SVC, "-s", "mh", "-b", "mh-fallback")
    got = answers(lab, 2)
    assert got[0] is not None and got[0] != mine and got[0] == got[1]


def test_threshold_overflow_and_listing(lab):
    """-x 1 on the first backend: a connection held open overloads it, so rr
    passes it over until the count drops below -y (or 3/4 of -x)."""
    lab.adm("-A", "-t", SVC, "-s", "rr")
    lab.adm("-a", "-t", SVC, "-r", f"{RS[1]}:80", "-m")
    lab.adm("-a", "-t", SVC, "-r", f"{RS[2]}:80", "-m", "-x", "1", "-y", "0")
    out = lab.adm("-L", "-n", "--thresholds").stdout
    assert f"  -> {'172.80.0.3:80':<28} {1:<10} {0:<10} {0:<10} {0:<10}\n" in out, out
    # rr: #2 (newest) then #1; #2's finished connection (inactive) overloads it
    assert answers(lab, 4) == [2, 1, 1, 1]


HOLD = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=5)
print("open", flush=True)
sys.stdin.readline()
if sys.argv[2] == "half":
    s.shutdown(socket.SHUT_WR)
    print("half", flush=True)
    sys.stdin.readline()
s.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def _counts(lab):
    out = lab.adm("-L", "-n").stdout
    return {int(m.group(1)): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"^  -> 172\.80\.0\.(\d):\d+\s+\S+\s+\d+\s+(\d+)\s+(\d+)", out, re.M)}


def test_active_inactive_open_halfclosed_closed_and_expiry(lab):
    """ActiveConn/InActConn during and after an open, a half-closed and a
    closed TCP connection and a UDP flow, then expiry with short timeouts."""
    lab.adm("-A", "-t", SVC, "-s", "rr")
    lab.adm("-a", "-t", SVC, "-r", f"{RS[1]}:80", "-m")
    argv = lab.cmd("client", ["python3", "-c", HOLD, VIP, "half"])
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "open"
        assert _counts(lab)[2] == (1, 0)                  # ESTABLISHED: active
        assert "ESTABLISHED" in lab.adm("-L", "-n", "-c").stdout
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "half"
        time.sleep(0.2)
        assert _counts(lab)[2] == (0, 1)                  # client FIN: CLOSE_WAIT, inactive
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "closed"
        time.sleep(0.2)
        assert _counts(lab)[2] == (0, 1)
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=10)
    # UDP: always inactive; timeouts shortened (new entries take them)
    lab.adm("--set", "3", "3", "3")
    assert lab.adm("-L", "--timeout").stdout == "Timeout (tcp tcpfin udp): 3 3 3\n"
    lab.adm("-A", "-u", f"{VIP}:80", "-s", "rr")
    lab.adm("-a", "-u", f"{VIP}:80", "-r", f"{RS[3]}:80", "-m")
    lab.run("client", ["python3", "-c",
                       "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                       f"s.settimeout(2); s.sendto(b'x', ('{VIP}', 80)); s.recvfrom(100)"])
    assert _counts(lab)[4] == (0, 1)
    assert re.search(r"^UDP 00:0[0-3]  UDP", lab.adm("-L", "-n", "-c").stdout, re.M)
    time.sleep(5)   # every timeout is 3 s (CLOSE's own is 10 s: close by FIN_WAIT)
    c = _counts(lab)
    assert c[4] == (0, 0), c
    conns = lab.adm("-L", "-n", "-c").stdout
    assert "UDP" not in conns, conns


def test_persistence_sticks_across_connections(lab):
    lab.adm("-A", "-t", SVC, "-s", "rr", "-p", "60")
    for n in (1, 2, 3):
        lab.adm("-a", "-t", SVC, "-r", f"{RS[n]}:80", "-m")
    got = answers(lab, 5)
    assert got == [3] * 5                          # rr's first pick, then the template
    out = lab.adm("-L", "-n", "--persistent-conn").stdout
    assert re.search(r"^  -> 172\.80\.0\.4:80\s+1\s+1\s+0\s+5\s*$", out, re.M), out
    conns = lab.adm("-L", "-n", "-c").stdout
    assert re.search(r"^TCP 0[01]:\d\d  NONE\s+10\.0\.0\.2:0\s+1\.2\.3\.4:80\s+172\.80\.0\.4:80$",
                     conns, re.M), conns
    # quiesced: the template still holds (expire_quiescent_template = 0)
    lab.adm("-e", "-t", SVC, "-r", f"{RS[3]}:80", "-m", "-w", "0")
    assert answers(lab, 2) == [3, 3]
    # removed: a new destination is scheduled and kept
    lab.adm("-d", "-t", SVC, "-r", f"{RS[3]}:80")
    got = answers(lab, 3)
    assert got[0] in (1, 2) and got == [got[0]] * 3


def test_port_zero_persistent_service(lab):
    lab.adm("-A", "-t", f"{VIP}:0", "-s", "rr", "-p")
    for n in (1, 2):
        lab.adm("-a", "-t", f"{VIP}:0", "-r", RS[n], "-m")
    assert "persistent 360" in lab.adm("-L", "-n").stdout
    assert answers(lab, 3) == [2, 2, 2]
    conns = lab.adm("-L", "-n", "-c").stdout
    assert re.search(r"NONE        10\.0\.0\.2:0\s+1\.2\.3\.4:0\s+172\.80\.0\.3:0$", conns, re.M), \
        conns
