"""Hitless upgrades (issue 15): `xdplb attach --replace` and `xdplb daemon`'s
start load the data path again over the pinned maps and swap it in.

The lab (xdplb/lab.py): a long-lived TCP stream from the client through
xdplb (Masq, VIP:7100 -> rs1:7100) to an echo server keeps flowing, every
byte echoed back and checked, across a replace and two daemon restarts (each
of which replaces too): zero resets, zero lost bytes, and the prog id on
every lb interface changes each time. A build whose maps differ is refused
with nothing changed; a replace killed half-way leaves every interface
running xdplb and is completed by the next one.
"""
import os
import subprocess
import sys

from conftest import ECHO, EchoStream, xdplb_argv
from xdplb import lab as xlab
from xdplb import state as xstate

VIP, PORT, RS1 = xlab.VIP, 7100, xlab.BACKENDS["rs1"]


def _xdp_ids(ns, devs):
    """{device: id of the XDP program on it} in netns ns."""
    from xdplb import bpfsys
    with ns.entered():
        return {dev: bpfsys.xdp_query_id(ns.ifindex(dev)) for dev in devs}


def _prog_ids(lab):
    return _xdp_ids(lab.node("lb"), xlab.LB_IFS)


def _daemon_replaced(lab):
    """Start `xdplb daemon` in the lb; returns it once it says it replaced the
    program on every lb interface."""
    proc = subprocess.Popen(lab.cmd("lb", xdplb_argv("daemon", "--interval", "0.5")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in proc.stdout:
        said.append(line)
        if sum(line.startswith("replaced xdplb on ") for line in said) == len(xlab.LB_IFS):
            return proc
    proc.wait(timeout=30)
    raise AssertionError(f"the daemon did not replace the program: {''.join(said)}"
                         f"{proc.stderr.read()}")


def test_a_stream_survives_replace_and_daemon_restarts(xlab_lab):
    lab = xlab_lab
    lab.adm("-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
    lab.adm("-a", "-t", f"{VIP}:{PORT}", "-r", f"{RS1}:{PORT}", "-m")
    lab.start_server("rs1", [sys.executable, "-c", ECHO, RS1, str(PORT)])
    stream, daemons = EchoStream(lab.node("client"), VIP, PORT), []
    try:
        stream.wait_for(1 << 20)
        before = _prog_ids(lab)
        replaced = lab.run("lb", xdplb_argv("attach", "--replace"), check=False)
        assert replaced.returncode == 0, replaced.stderr
        after = _prog_ids(lab)
        assert all(after[d] != before[d] for d in before) and len(set(after.values())) == 1
        for dev in xlab.LB_IFS:
            assert f"replaced xdplb on {dev}: prog id {before[dev]} -> {after[dev]}" \
                in replaced.stdout
        stream.wait_for(1 << 20)
        for _ in range(2):      # a restart: stop, start (which replaces)
            ids = _prog_ids(lab)
            daemons.append(_daemon_replaced(lab))
            assert all(_prog_ids(lab)[d] != ids[d] for d in ids)
            stream.wait_for(1 << 20)
            daemons[-1].terminate()
            daemons[-1].wait(timeout=30)
            stream.wait_for(256 << 10)
        assert stream.error is None, repr(stream.error)
        stats = lab.adm("-L", "-n", "--stats", "--exact", "-t", f"{VIP}:{PORT}").stdout
        # xdplb carried it (Conns may count a SYN the not-yet-listening server refused)
        inpkts, outpkts = (int(x) for x in stats.splitlines()[3].split()[3:5])
        assert inpkts > 1000 and outpkts > 1000, stats
        folder = lab.pin_folder()
        assert not any(os.path.exists(os.path.join(folder, p))
                       for p in xstate.PREV_PINS.values())
        print(f"\nstream: {stream.echoed} bytes echoed intact across a replace and two "
              f"daemon restarts")
    finally:
        for d in daemons:
            if d.poll() is None:
                d.terminate()
                d.wait(timeout=30)
        stream.close()
        lab.adm("-D", "-t", f"{VIP}:{PORT}", check=False)


REPLACE = """
import sys
from xdplb import loader
from xdplb.state import State, StateError
with State.open() as st:
    try:
        loader.replace(st, cflags=sys.argv[1:])
    except StateError as e:
        print(e)
        sys.exit(3)
"""


def _pinned_id(folder):
    from xdplb import loader
    return loader._pinned_prog_id(os.path.join(folder, xstate.PROG_PIN))


def _pins():
    from xdplb import maps
    from xdplb.loader import NEW_CONN_PIN
    return [*maps.MAPS, NEW_CONN_PIN, xstate.PROG_PIN]


def test_a_build_with_other_maps_is_refused_and_nothing_changes(cli_attached):
    cli_netns = cli_attached
    adm = [sys.executable, "-m", "xdplb.adm"]
    assert cli_netns.run(adm + ["-A", "-t", "10.0.0.1:80"]).returncode == 0
    ids, rules = _xdp_ids(cli_netns, ("v0", "v1")), cli_netns.run(adm + ["-S", "-n"]).stdout
    refused = cli_netns.run([sys.executable, "-c", REPLACE, "-DXDPLB_MAX_CONNS=1024"])
    assert refused.returncode == 3, refused.stderr
    assert "conns.max_entries 262144 -> 1024" in refused.stdout
    assert "nothing was changed" in refused.stdout
    assert _xdp_ids(cli_netns, ("v0", "v1")) == ids
    assert set(ids.values()) == {_pinned_id(cli_netns.pin_folder())}
    assert cli_netns.run(adm + ["-S", "-n"]).stdout == rules
    assert sorted(os.listdir(cli_netns.pin_folder())) == sorted(_pins())


def test_a_replace_killed_half_way_is_undone_or_completed_by_the_next(cli_attached):
    """Killed at the 4th `replace` point (the new prog array published, the
    program not: the next replace puts the old array back first) and at the
    6th (the new program published, v0 swapped, v1 not: the next one swaps
    v1 first). Each time both interfaces still run xdplb and stay redirect
    targets, and the next replace leaves both on the pinned program with the
    old pins gone."""
    cli_netns = cli_attached
    folder = cli_netns.pin_folder()
    for n in (4, 6):
        env = dict(os.environ, XDPLB_FAULT_KILL=f"replace:{n}")
        env.pop("XDPLB_PIN_DIR", None)
        killed = subprocess.run(cli_netns.cmd(xdplb_argv("attach", "--replace")), env=env,
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, killed.stderr
        assert all(os.path.exists(os.path.join(folder, p)) for p in xstate.PREV_PINS.values())
        running = set(_xdp_ids(cli_netns, ("v0", "v1")).values())
        assert len(running) == (1 if n == 4 else 2) and 0 not in running
        status = cli_netns.xdplb("status")
        assert status.returncode == 0, status.stderr
        assert "v0" in status.stdout and "v1" in status.stdout
        assert "redirect target" not in status.stdout + status.stderr, status.stdout
        done = cli_netns.xdplb("attach", "--replace")
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("replaced xdplb on ") == 2
        assert sorted(os.listdir(folder)) == sorted(_pins())
        assert set(_xdp_ids(cli_netns, ("v0", "v1")).values()) == {_pinned_id(folder)}
