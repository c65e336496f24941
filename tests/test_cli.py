"""`xdplb` attach / status / detach on a throwaway veth pair in a private netns,
and the lab's life cycle through the CLI (up, exec, down leaves nothing)."""
import json
import os
import re
import subprocess

import pytest
from conftest import xdplb_argv


def test_attach_status_detach_and_errors(cli_netns):
    """One netns through a state's life (each state created compiles the
    data path): the errors without a state, attach native (creates it),
    status, attach generic (reuses it), detach one, detach all."""
    ns = cli_netns
    d = ns.xdplb("detach")
    assert d.returncode == 0 and "nothing to detach" in d.stdout
    d = ns.xdplb("detach", "v0")
    assert d.returncode != 0 and "no state" in d.stderr
    a = ns.xdplb("attach", "nosuchif0")
    assert a.returncode != 0 and "no such interface" in a.stderr
    a = ns.xdplb("attach", "--mode", "bogus", "v0")
    assert a.returncode == 2
    assert not os.path.exists(ns.pin_folder())

    p = ns.xdplb("attach", "v0")
    assert p.returncode == 0, p.stderr
    assert re.search(r"attached xdplb \(prog id \d+\) to v0 in native mode", p.stdout), p.stdout
    pid = int(re.search(r"prog id (\d+)", p.stdout).group(1))
    assert ns.xdp("v0") == ("xdp", pid)  # native (driver) mode
    assert os.path.exists(os.path.join(ns.pin_folder(), "prog"))

    s = ns.xdplb("status")
    assert s.returncode == 0, s.stderr
    assert f"program:  id {pid}" in s.stdout
    assert re.search(r"^\s+v0\s+ifindex \d+\s+native$", s.stdout, re.M), s.stdout
    assert "v1" not in s.stdout
    for name, cap in (("services", 16384), ("dests", 131071), ("conns", 262144),
                      ("conns_assured", 262144), ("services6", 4096), ("conns6", 65536),
                      ("conns6_assured", 65536), ("fnat_out", 524288), ("fnat_out6", 131072)):
        assert re.search(rf"^\s+{name}\s+0 / {cap}\b", s.stdout, re.M), s.stdout
    from xdplb.structs import COUNTERS
    for name in COUNTERS:
        assert re.search(rf"^\s+{name}\s+\d+$", s.stdout, re.M), s.stdout
    d = ns.xdplb("detach", "v1")
    assert d.returncode != 0 and "not attached to v1" in d.stderr

    p = ns.xdplb("attach", "--mode", "generic", "v1")
    assert p.returncode == 0, p.stderr
    assert "created xdplb state" not in p.stdout  # the second attach reuses the state
    assert ns.xdp("v1") == ("xdpgeneric", pid) and ns.xdp("v0") == ("xdp", pid)
    s = ns.xdplb("status").stdout
    assert re.search(r"^\s+v1\s+ifindex \d+\s+generic$", s, re.M), s
    assert re.search(r"^\s+v0\s+ifindex \d+\s+native$", s, re.M), s

    d = ns.xdplb("detach", "v1")
    assert d.returncode == 0 and "detached xdplb from v1" in d.stdout
    assert ns.xdp("v1").prog_id == 0 and ns.xdp("v0").prog_id == pid
    assert os.path.exists(ns.pin_folder())  # detaching one interface keeps the state
    s = ns.xdplb("status").stdout
    assert "v1" not in s and "v0" in s

    d = ns.xdplb("detach")
    assert d.returncode == 0, d.stderr
    assert "detached xdplb from v0" in d.stdout
    assert "unpinned" in d.stdout
    assert ns.xdp("v0") == ns.xdp("v1") == (None, 0)
    assert not os.path.exists(ns.pin_folder())
    s = ns.xdplb("status")
    assert s.returncode == 0 and "not loaded" in s.stdout


def test_lab_cli_lifecycle(xlab_prefix):
    from conftest import _need_root_and_bpffs
    _need_root_and_bpffs()
    from xdplb.lab import Lab
    lab = Lab(xlab_prefix, say=lambda m: None)
    env = dict(os.environ, XDPLB_LAB_PREFIX=xlab_prefix)

    def xdplb(*args, timeout=120):
        return subprocess.run(xdplb_argv(*args), capture_output=True, text=True, env=env,
                              timeout=timeout)

    try:
        up = xdplb("lab", "up")
        assert up.returncode == 0, up.stderr
        assert "gro on" in up.stdout.lower() and "checksum offload off" in up.stdout.lower()
        assert xdplb("lab", "up").stdout.strip().endswith("is already up")
        for node in ("client", "lb", "rs1", "rs2", "rs3"):
            assert os.path.exists(f"/run/netns/{xlab_prefix}-{node}")
        rec = json.load(open(f"/run/xdplb/lab-{xlab_prefix}.json"))
        pids = list(rec["pids"].values())
        assert len(pids) == 3 and all(os.path.exists(f"/proc/{p}") for p in pids)

        st = xdplb("lab", "exec", "lb", "--", "xdplb", "status")
        assert st.returncode == 0, st.stderr
        for ifname in ("veth-client", "veth-rs1", "veth-rs2", "veth-rs3"):
            assert re.search(rf"^\s+{ifname}\s+ifindex \d+\s+native$", st.stdout, re.M), st.stdout
        folder = lab.pin_folder()
        assert st.stdout.startswith(f"state:    {folder}\n")
        for n, addr in ((1, "172.80.0.2"), (2, "172.80.0.3"), (3, "172.80.0.4")):
            r = xdplb("lab", "exec", f"rs{n}", "--", "curl", "-s", "-m", "3", f"http://{addr}/")
            assert r.returncode == 0 and r.stdout == f"This is service #{n}\n"
        # exec passes the command's exit status through
        assert xdplb("lab", "exec", "client", "--", "sh", "-c", "exit 7").returncode == 7
        assert xdplb("lab", "exec", "nosuch", "--", "true").returncode == 2

        down = xdplb("lab", "down")
        assert down.returncode == 0, down.stderr
        assert not os.path.exists(folder)
        for node in ("client", "lb", "rs1", "rs2", "rs3"):
            assert not os.path.exists(f"/run/netns/{xlab_prefix}-{node}")
        assert not os.path.exists(f"/run/xdplb/lab-{xlab_prefix}.json")
        for p in pids:
            assert not os.path.exists(f"/proc/{p}") or "xdplb" not in open(
                f"/proc/{p}/cmdline").read()
        again = xdplb("lab", "down")
        assert again.returncode == 0 and "nothing to remove" in again.stdout
        gone = xdplb("lab", "exec", "client", "--", "true")
        assert gone.returncode != 0 and "not up" in gone.stderr
    finally:
        lab.down(quiet=True)


def test_daemon_sweeps_until_stopped(cli_netns, cli_attached):
    """`xdplb daemon` refuses without state, and with state (the session's
    attached netns) keeps running (sweeping) until it is terminated."""
    p = cli_netns.xdplb("daemon")
    assert p.returncode != 0 and "no state" in p.stderr
    proc = subprocess.Popen(cli_attached.cmd(xdplb_argv("daemon", "--interval", "0.2")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
