"""Crash safety (issue 6, part 4): a process killed with SIGKILL at any point
of -R, of every configuration command, of create_state, attach, detach and
unpinning leaves a state that the next command completes or reports.

Kills come from xdplb/fault.py (XDPLB_FAULT_KILL=<kind>:<n>: the process
SIGKILLs itself right before its n-th point of that kind) and, for -R, from
outside at random moments. The configuration state is private and pinned
from the real maps.h with a pass-through program (test_adm.create_stub_state);
attach and detach run on a veth pair in a netns of their own."""
import contextlib
import ctypes as C
import glob
import io
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import xdplb_argv

from test_adm import CMD, HEAD, STUB, UNSHARE, create_stub_state
from xdplb import adm, bpfsys, journal, loader
from xdplb import fault as fault_mod
from xdplb import state as statemod
from xdplb.control import Control
from xdplb.structs import XDPLB_SYSCTL_MAX, XDPLB_TMO_MAX, Alloc, DestEntry, SchedPos
from xdplb.tables import Tables

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpffs)")

KILLED = {"n": 0, "external": 0}   # processes killed by an injected fault / from outside
# `make fuzz` runs these with a larger sample of write points and more kills
SCALE = int(os.environ.get("XDPLB_CRASH_SCALE", "1"))


@pytest.fixture(scope="module")
def pin():
    old = os.environ.get("XDPLB_PIN_DIR")
    try:
        with statemod.private_folder(f"test-{os.getpid()}-crash") as folder:
            os.environ["XDPLB_PIN_DIR"] = folder
            create_stub_state(folder)
            yield folder
    finally:
        if old is None:
            os.environ.pop("XDPLB_PIN_DIR", None)
        else:
            os.environ["XDPLB_PIN_DIR"] = old
        sys.stderr.write(f"\ntest_crash: {KILLED['n']} processes killed by injected faults, "
                         f"{KILLED['external']} from outside\n")


def sub(args, stdin=None, fault=None, env=None):
    """xdplbadm in a process of its own (and a netns of its own, as test_adm)."""
    env = dict(os.environ if env is None else env)
    env.pop("XDPLB_FAULT_KILL", None)
    if fault:
        env["XDPLB_FAULT_KILL"] = fault
    p = subprocess.run(UNSHARE + CMD + list(args), input=stdin, capture_output=True,
                       text=True, env=env, timeout=120)
    if p.returncode == -signal.SIGKILL:
        KILLED["n"] += 1
    return p


def run_in(*args, stdin=""):
    """The next command, in this process (adm.run: the CLI's code)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = adm.run(["xdplbadm", *args])
    finally:
        sys.stdin = saved
    return rc, out.getvalue(), err.getvalue()


def snapshot():
    with Control.open() as ctl:
        return ctl.snapshot()


def quick_snapshot():
    """snapshot() of the first 4,096 slots of every array (the tests use fewer
    services and destinations), without tx_ports (no command here writes it):
    a tenth of the time."""
    from xdplb import maps
    snap = {}
    with Control.open() as ctl:
        for name in maps.MAPS:
            if name == "tx_ports":
                continue
            m = getattr(ctl.st, name)
            arr = m.key_type is C.c_uint32 and m.max_entries > 4096
            snap[name] = sorted((k, v) for k, v in m.raw_items(4096 if arr else None) if any(v))
    return snap


def fork_run(args, stdin="", fault=None):
    """xdplbadm args in a forked child of this process (adm.run, the CLI's
    code, without the interpreter start-up), XDPLB_FAULT_KILL=fault; returns
    its exit code, or -9 when it was killed."""
    pid = os.fork()
    if pid == 0:
        code = 127
        try:
            os.environ.pop("XDPLB_FAULT_KILL", None)
            if fault:
                os.environ["XDPLB_FAULT_KILL"] = fault
            fault_mod._counts.clear()
            sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin or ""), io.StringIO(), \
                io.StringIO()
            code = adm.run(["xdplbadm", *args])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        KILLED["n"] += 1
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def journal_files(folder):
    j = statemod.journal_path(folder)
    return glob.glob(glob.escape(j) + "*")


def reset(base):
    """The same starting maps every time (seqs counted from zero, the timeouts
    and settings unset, ring positions moved as traffic would)."""
    with Control.open() as ctl:
        ctl.flush()
        ctl.sweep()     # rs_table and rs_filter outlive -C until a sweep
        ctl.st.alloc.put(0, Alloc())
        ctl.st.timeouts.put_zeros(range(XDPLB_TMO_MAX))
        ctl.st.sysctl.put_zeros(range(XDPLB_SYSCTL_MAX))
    rc, _, err = run_in("-R", stdin=base)
    assert (rc, err) == (0, "")
    with Control.open() as ctl:
        for c in Tables(ctl.st).services().values():
            ctl.st.sched_pos.put(c.slot, SchedPos(c.ring_base + 5))


BASE = """\
-A -t 10.0.0.1:80 -s wrr
-a -t 10.0.0.1:80 -r 10.1.0.1 -m -w 3
-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m
-A -u 10.0.0.1:53 -s rr
-a -u 10.0.0.1:53 -r 10.2.0.1 -m
-a -u 10.0.0.1:53 -r 10.2.0.2 -m
-A -t 10.0.0.2:80 -s lc
-a -t 10.0.0.2:80 -r 10.3.0.1 -m
-a -t 10.0.0.2:80 -r 10.3.0.2 -m -w 2
"""
# the same with hash-table schedulers: a change to one rewrites 256 or 4093
# ring entries, one write point each (sampled)
BASE_TABLES = BASE + """\
-A -t 10.0.0.3:443 -s sh
-a -t 10.0.0.3:443 -r 10.4.0.1 -m -w 2
-a -t 10.0.0.3:443 -r 10.4.0.2 -m
-A -t 10.0.0.4:443 -s mh -b mh-port
-a -t 10.0.0.4:443 -r 10.5.0.1 -m
"""


def restore_input():
    """A few hundred -A/-a lines: new services of every kind of schedule, more
    servers for the existing ones, refusals in between."""
    rnd = random.Random(6)
    lines = []
    scheds = ["rr", "wrr", "lc", "wlc", "sh", "mh", "dh", "sed"]
    for i in range(40):
        lines.append(f"-A -t 10.9.{i}.1:80 -s {scheds[i % len(scheds)]}")
        for j in range(rnd.randint(3, 8)):
            lines.append(f"-a -t 10.9.{i}.1:80 -r 10.19.{i}.{j + 1} -m -w {rnd.randint(0, 4)}")
        if i % 10 == 3:
            lines.append(f"-a -t 10.9.{i}.1:80 -r 10.19.{i}.1 -m")    # Destination already exists
            lines.append("-A -t 10.0.0.1:80 -s rr")                   # Service already exists
            lines.append("-a -t 10.8.8.8:80 -r 10.19.0.1 -m")         # Service not defined
        if i % 8 == 0:
            lines.append(f"-a -t 10.0.0.1:80 -r 10.1.1.{i + 1} -m -w {i % 3 + 1}")
            lines.append(f"-a -u 10.0.0.1:53 -r 10.2.1.{i + 1} -m")
            lines.append(f"-a -t 10.0.0.2:80 -r 10.3.1.{i + 1} -m")
    return "".join(line + "\n" for line in lines)


def write_points(folder):
    """The write points of the journal in place (its syscalls plus the one
    before its removal), as journal.apply makes them."""
    with open(statemod.journal_path(folder), "rb") as f:
        data = f.read()
    with statemod.State(folder) as st:
        _, ops = journal.decode(st, data)
    n = 0
    for op in ops:
        n += op.n if op.kind == journal.DEL else -(-op.n // journal.BATCH)
    return n + 1


def crash_at_points(folder, base, args, stdin=None, sample=None, prepare=None):
    """Run `xdplbadm args` killed before the commit, then at write points
    1, 2, ... (every one, or a sample); after each kill one more command
    (-Ln) must see the maps of the uninterrupted run, or the maps before it
    when the kill came before the commit. Returns the number of points.
    prepare() runs after each reset(base)."""
    def start(base):
        reset(base)
        if prepare:
            prepare()

    start(base)
    before = snapshot()
    p = sub(args, stdin)
    rc_ok, err_ok = p.returncode, p.stderr
    # (after the listing's sweep, which prunes rs_table of services whose
    # destination went: every check below follows a listing too)
    listing = run_in("-Ln")[1]
    after, quick_after = snapshot(), quick_snapshot()
    assert after != before, args

    # killed with the journal written but not renamed: nothing happened
    start(base)
    p = sub(args, stdin, fault="journal:1")
    assert p.returncode == -signal.SIGKILL, (args, p.stderr)
    assert [".journal.tmp" in f for f in journal_files(folder)] == [True]
    assert snapshot() == before
    rc, out, err = run_in("-S", "-n")
    assert (rc, err) == (0, "")
    assert journal_files(folder) == []
    assert snapshot() == before

    # killed while applying (or before removing the journal): the next command
    # completes it (the first kill in a process of its own, the others forked)
    start(base)
    p = sub(args, stdin, fault="write:1")
    assert p.returncode == -signal.SIGKILL
    total = write_points(folder)
    points = range(1, total + 1)
    if sample:
        rnd = random.Random(total)
        points = sorted({1, 2, 3, total // 2, total - 1, total} |
                        set(rnd.sample(range(1, total + 1), min(sample, total))))
    for n in points:
        if n > 1:
            start(base)
            assert fork_run(args, stdin, fault=f"write:{n}") == -signal.SIGKILL, (args, n)
        assert os.path.exists(statemod.journal_path(folder))
        rc, out, err = run_in("-Ln")
        assert rc == 0 and out == listing, (args, n)
        assert re.fullmatch(r"xdplb: completed a configuration change interrupted in process "
                            r"\d+ \(\d+ map entries in \d+ writes redone\)\n", err), err
        assert (snapshot() if n in (1, total) else quick_snapshot()) == \
            (after if n in (1, total) else quick_after), (args, n)
        assert journal_files(folder) == []
    # one point past the last: the command completes as if nothing was injected
    start(base)
    p = sub(args, stdin, fault=f"write:{total + 1}")
    assert (p.returncode, p.stderr) == (rc_ok, err_ok)
    run_in("-Ln")
    assert snapshot() == after
    return total


def test_restore_killed_at_every_write_point(pin):
    text = restore_input()
    assert len(text.splitlines()) > 250
    n = crash_at_points(pin, BASE, ["-R"], stdin=text)
    assert n > 10     # (a batch per map and phase, one per ring entry deleted)
    ok = sub(["-R"], stdin=text)
    assert "Service already exists" in ok.stderr


COMMANDS = [
    ["-A", "-t", "10.0.0.9:80", "-s", "rr"],
    ["-A", "-u", "10.0.0.9:53", "-s", "wlc", "-p", "60"],
    ["-E", "-t", "10.0.0.1:80", "-s", "rr"],
    ["-E", "-t", "10.0.0.2:80", "-s", "wrr", "-p"],
    ["-E", "-u", "10.0.0.1:53", "-s", "rr", "-p", "30"],
    ["-D", "-t", "10.0.0.1:80"],
    ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-m", "-w", "2"],
    ["-a", "-t", "10.0.0.2:80", "-r", "10.3.0.9", "-m", "-x", "10", "-y", "5"],
    ["-e", "-t", "10.0.0.1:80", "-r", "10.1.0.1", "-m", "-w", "1"],
    ["-e", "-t", "10.0.0.2:80", "-r", "10.3.0.2", "-m", "-w", "0"],
    ["-d", "-u", "10.0.0.1:53", "-r", "10.2.0.1"],
    ["-C"],
    ["--set", "100", "20", "30"],
]


def test_every_command_killed_at_every_write_point(pin):
    points = 0
    for args in COMMANDS:
        points += crash_at_points(pin, BASE, args)
    # -Z: counters zeroed (set some first: the base has none)
    from xdplb.structs import IpVsStats

    def counters():
        with Control.open() as ctl:
            for s in ctl.services(counts=False):
                ctl.st.svc_stats.put(s.slot, IpVsStats(5, 10, 0, 1000, 0))
                for d in s.dests:
                    ctl.st.dest_stats.put(d.slot, IpVsStats(1, 2, 3, 4, 5))
    points += crash_at_points(pin, BASE, ["-Z"], prepare=counters)
    points += crash_at_points(pin, BASE, ["-Z", "-t", "10.0.0.1:80"], prepare=counters)
    assert points > 60


def test_table_schedulers_sampled_points(pin):
    """Changes that rewrite sh/mh tables (thousands of write points): a sample."""
    for args in (["-C"], ["-a", "-t", "10.0.0.4:443", "-r", "10.5.0.2", "-m"],
                 ["-d", "-t", "10.0.0.3:443", "-r", "10.4.0.1"],
                 ["-E", "-t", "10.0.0.4:443", "-s", "rr"]):
        assert crash_at_points(pin, BASE_TABLES, args, sample=6 * SCALE) > 256


def test_redo_killed_too(pin):
    """The command that redoes a journal is killed while redoing it: the one
    after redoes it again (puts and deletes are idempotent)."""
    args = ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-m", "-w", "2"]
    reset(BASE)
    sub(args)
    after = snapshot()
    for first in (1, 3):
        for second in (1, 2, 4, 6):
            reset(BASE)
            assert sub(args, fault=f"write:{first}").returncode == -signal.SIGKILL
            p = sub(["-Ln"], fault=f"write:{second}")
            assert p.returncode == -signal.SIGKILL, (first, second, p.stdout)
            assert os.path.exists(statemod.journal_path(pin))
            rc, out, err = run_in("-S", "-n")
            assert rc == 0 and "completed a configuration change" in err
            assert snapshot() == after


def test_external_sigkill_during_restore(pin):
    """`xdplbadm -R` killed from outside at random moments: 10 times anywhere
    in its run, 10 times soon after its journal appears (during the apply).
    The next command always sees the maps before or after the whole -R, and
    after whenever a journal was there."""
    svcs = "".join(f"-A -u 10.7.{i // 250}.{i % 250 + 1}:53 -s rr\n"
                   f"-a -u 10.7.{i // 250}.{i % 250 + 1}:53 -r 10.17.0.{i % 250 + 1} -m\n"
                   f"-a -u 10.7.{i // 250}.{i % 250 + 1}:53 -r 10.17.1.{i % 250 + 1} -m\n"
                   for i in range(300))
    base = BASE + svcs
    text = "".join(f"-a -u 10.7.{i // 250}.{i % 250 + 1}:53 -r 10.17.2.{i % 250 + 1} -m\n"
                   for i in range(300)) + restore_input()
    reset(base)
    run_in("-Ln")       # (the listings below sweep: rs_table pruned)
    before = quick_snapshot()
    t = time.perf_counter()
    assert sub(["-R"], stdin=text).returncode == 0
    whole = time.perf_counter() - t
    run_in("-Ln")
    after = quick_snapshot()
    rnd = random.Random(1234)
    outcome = {"before": 0, "after": 0, "after with journal": 0}
    jpath = statemod.journal_path(pin)
    for run in range(20 * SCALE):
        reset(base)
        p = subprocess.Popen(UNSHARE + CMD + ["-R"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                             env=dict(os.environ))
        p.stdin.write(text)
        p.stdin.close()
        if run % 2 == 0:
            time.sleep(rnd.uniform(0, whole))
        else:
            deadline = time.perf_counter() + 10 * whole
            while not os.path.exists(jpath) and p.poll() is None and \
                    time.perf_counter() < deadline:
                pass
            time.sleep(rnd.uniform(0, 0.02))
        p.send_signal(signal.SIGKILL)
        if p.wait() == -signal.SIGKILL:
            KILLED["external"] += 1
        had_journal = os.path.exists(jpath)
        rc, out, err = run_in("-Ln")
        assert rc == 0
        snap = quick_snapshot()
        if had_journal:
            assert snap == after and "completed" in err, run
            outcome["after with journal"] += 1
        else:
            assert snap in (before, after), run
            outcome["before" if snap == before else "after"] += 1
        assert journal_files(pin) == []
    sys.stderr.write(f"\nexternal kills of -R ({whole:.2f} s): {outcome}\n")
    assert outcome["after with journal"] >= 3


def test_bad_journals_are_discarded(pin):
    """A journal that does not check out was never applied: discarded, said so."""
    args = ["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-m"]
    jpath = statemod.journal_path(pin)
    reset(BASE)
    before = snapshot()
    assert sub(args, fault="write:1").returncode == -signal.SIGKILL
    good = open(jpath, "rb").read()
    for bad in (good[:len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b"",
                b"XDPLBJ1\n" + bytes(100)):
        with open(jpath, "wb") as f:
            f.write(bad)
        rc, out, err = run_in("-S", "-n")
        assert rc == 0 and "discarded the journal" in err and "incomplete" in err, err
        assert snapshot() == before and journal_files(pin) == []
    # a journal of an earlier state (the folder recreated since: new map ids)
    with Control.open() as ctl:
        saved = ctl.save(numeric=True)
    statemod.remove(pin)
    create_stub_state(pin)
    with open(jpath, "wb") as f:
        f.write(good)
    os.chmod(jpath, 0o600)
    rc, out, err = run_in("-S", "-n")
    assert (rc, out) == (0, "") and "written for an earlier state" in err, err
    assert journal_files(pin) == []
    assert run_in("-R", stdin=saved)[0] == 0


def test_journal_is_private(pin):
    """Mode 0600, and a listing waits for a live writer instead of redoing its journal."""
    reset(BASE)
    assert sub(["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.9", "-m"],
               fault="write:2").returncode == -signal.SIGKILL
    jpath = statemod.journal_path(pin)
    assert os.stat(jpath).st_mode & 0o777 == 0o600
    with statemod.locked(pin):
        p = subprocess.Popen(UNSHARE + CMD + ["-Ln"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        time.sleep(0.3)
        waiting = p.poll() is None     # for the lock
    out, err = p.communicate(timeout=30)
    assert waiting
    assert p.returncode == 0 and "10.1.0.9:80" in out and "completed" in err


# --- create_state, and an interrupted removal --------------------------------------

class _Keep:
    """A bcc object whose cleanup() leaves the parent's program alone."""

    def __init__(self, b):
        self.b = b

    def __getitem__(self, name):
        return self.b[name]

    def cleanup(self):
        pass


def test_create_state_killed_at_every_pin():
    """A creator killed before each pin and before the rename leaves only
    `<folder>_tmp<pid>`; the next command (xdplbadm -Ln, xdplb status) removes
    it, and the state is never half there."""
    from bcc import BPF
    b = BPF(text=STUB, cflags=[f"-I{loader.BPF_DIR}", "-Wno-unused-function"])
    fn = b.load_func(b"xdplb_main", BPF.XDP)
    folder = os.path.join(statemod.bpffs_root(create=True), "xdplb", f"test-{os.getpid()}-pins")
    env = dict(os.environ, XDPLB_PIN_DIR=folder)
    try:
        n = 1
        while True:
            pid = os.fork()
            if pid == 0:  # the creator
                try:
                    os.environ["XDPLB_FAULT_KILL"] = f"pin:{n}"
                    loader.compile_program = lambda cflags=(): (_Keep(b), fn)
                    loader.create_state(folder)
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            if not os.WIFSIGNALED(status):
                break
            assert os.WTERMSIG(status) == signal.SIGKILL
            KILLED["n"] += 1
            tmp = f"{folder}_tmp{pid}"
            assert not os.path.exists(folder)
            assert len(os.listdir(tmp)) == n - 1      # pins made so far
            if n % 2:
                p = sub(["-Ln"], env=env)
                assert (p.returncode, p.stdout, p.stderr) == (0, HEAD, "")
            else:
                p = subprocess.run(xdplb_argv("status"), capture_output=True, text=True,
                                   env=env, timeout=60)
                assert p.returncode == 0 and "not loaded" in p.stdout, p.stderr
            assert glob.glob(glob.escape(folder) + "_tmp*") == [] and not os.path.exists(folder)
            n += 1
        assert n == len(loader.maps.MAPS) + 4      # every map, new_conn, prog, the rename
        assert os.path.exists(os.path.join(folder, statemod.PROG_PIN))
        assert glob.glob(glob.escape(folder) + "_tmp*") == []
        with Control.open(folder=folder) as ctl:
            assert ctl.services() == []
    finally:
        statemod.remove(folder)
        b.cleanup()


def test_interrupted_unpin():
    """Killed in the middle of unpinning: no program pin, so no state; the
    next detach removes the rest, the next create replaces it."""
    folder = os.path.join(statemod.bpffs_root(create=True), "xdplb", f"test-{os.getpid()}-rm")
    env = dict(os.environ, XDPLB_PIN_DIR=folder, XDPLB_FAULT_KILL="remove:1")
    code = f"from xdplb import state; state.remove({folder!r})"
    try:
        for step in ("detach", "create"):
            create_stub_state(folder)
            p = subprocess.run([sys.executable, "-c", code], env=env, timeout=60,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            assert p.returncode == -signal.SIGKILL
            KILLED["n"] += 1
            assert os.path.isdir(folder) and os.listdir(folder)
            assert not os.path.exists(os.path.join(folder, statemod.PROG_PIN))
            env2 = dict(os.environ, XDPLB_PIN_DIR=folder)
            p = sub(["-Ln"], env=env2)
            assert (p.returncode, p.stdout) == (0, HEAD)
            if step == "detach":
                p = subprocess.run(xdplb_argv("detach"), capture_output=True, text=True,
                                   env=env2, timeout=60)
                assert p.returncode == 0 and "removed incomplete state" in p.stdout
                assert not os.path.exists(folder)
            else:
                create_stub_state(folder)    # what the next creating command does
                with Control.open(folder=folder) as ctl:
                    assert ctl.services() == []
                statemod.remove(folder)
    finally:
        statemod.remove(folder)


# --- attach / detach on a veth pair in a netns of the test's own --------------------

def _tx_ports(folder):
    with statemod.State(folder) as st:
        return {k for k, _ in st.tx_ports.items()}


def _attached(ns):
    return {n for n in ("v0", "v1") if ns.xdp(n).prog_id}


def _killed(ns, fault, *args):
    os.environ["XDPLB_FAULT_KILL"] = fault
    try:
        p = ns.xdplb(*args)
    finally:
        del os.environ["XDPLB_FAULT_KILL"]
    return p


def _consistent(ns, folder):
    idx = {n: ns.ifindex(n) for n in ("v0", "v1")}
    return _tx_ports(folder) == {idx[n] for n in _attached(ns)}


def test_attach_detach_killed_at_every_point(cli_netns):
    ns = cli_netns
    folder = ns.pin_folder()
    create_stub_state(folder)
    idx = {n: ns.ifindex(n) for n in ("v0", "v1")}
    # attach v0 v1: before xdp_attach and before the tx_ports update, per interface
    n = 1
    while True:
        p = _killed(ns, f"attach:{n}", "attach", "v0", "v1")
        if p.returncode != -signal.SIGKILL:
            assert p.returncode == 0, p.stderr
            break
        KILLED["n"] += 1
        was = _consistent(ns, folder)
        s = ns.xdplb("status")
        assert s.returncode == 0, s.stderr
        assert ("repaired: " in s.stdout) == (not was), (n, s.stdout)
        if not was:
            assert "runs xdplb but was not a redirect target: added to tx_ports" in s.stdout
        assert _consistent(ns, folder)
        a = ns.xdplb("attach", "v0", "v1")
        assert a.returncode == 0, a.stderr
        assert _attached(ns) == {"v0", "v1"} and _tx_ports(folder) == set(idx.values())
        assert ns.xdplb("detach", "v0", "v1").returncode == 0
        assert _attached(ns) == set() and _tx_ports(folder) == set()
        n += 1
    assert n == 5
    # XDP removed behind xdplb's back: a redirect target without xdplb
    ns.xdp_detach("v1", bpfsys.XDP_FLAGS_DRV_MODE)
    s = ns.xdplb("status")
    assert "repaired: v1 was a redirect target without xdplb attached: removed from tx_ports" \
        in s.stdout, s.stdout
    assert _tx_ports(folder) == {idx["v0"]}
    assert ns.xdplb("attach", "v1").returncode == 0
    # detach (everything): per interface before the tx_ports delete and before
    # xdp_detach, then before unpinning, then inside the unpinning
    points = [f"detach:{i}" for i in range(1, 6)] + ["remove:1"]
    for fault in points:
        if not os.path.exists(os.path.join(folder, statemod.PROG_PIN)):
            create_stub_state(folder)
            assert ns.xdplb("attach", "v0", "v1").returncode == 0
        p = _killed(ns, fault, "detach")
        assert p.returncode == -signal.SIGKILL, (fault, p.stdout, p.stderr)
        KILLED["n"] += 1
        s = ns.xdplb("status")
        assert s.returncode == 0, s.stderr
        if fault == "remove:1":
            assert "not loaded" in s.stdout
        else:
            assert _consistent(ns, folder), fault
        d = ns.xdplb("detach")
        assert d.returncode == 0, d.stderr
        assert _attached(ns) == set() and not os.path.exists(folder)
        assert not glob.glob(glob.escape(folder) + "_tmp*")
        assert not os.path.exists(statemod.lock_path(folder)) and journal_files(folder) == []


def test_transaction_reads_its_writes(pin):
    """Inside a transaction reads through its view see its writes (get, keys,
    raw_items, arrays and hashes, per-CPU values); nothing reaches the maps
    before the end, and nothing at all when the block raises."""
    from xdplb.structs import IpVsStats, RingKey
    reset(BASE)
    before = snapshot()
    with Control.open() as ctl:
        with pytest.raises(RuntimeError), ctl.transaction() as tx:
            tx.sched_ring.put(RingKey(77, 1), C.c_uint32(5))
            tx.sched_ring.put_many([(RingKey(77, 2), C.c_uint32(6)),
                                    (RingKey(77, 3), C.c_uint32(7))])
            tx.sched_ring.delete(RingKey(77, 2))
            assert tx.sched_ring.get(RingKey(77, 1)).value == 5
            assert tx.sched_ring.get(RingKey(77, 2)) is None
            keys = {(k.svc_slot, k.index) for k in tx.sched_ring.keys()}
            assert {(77, 1), (77, 3)} <= keys and (77, 2) not in keys
            raw = dict(tx.sched_ring.raw_items())
            assert raw[bytes(RingKey(77, 3))] == bytes(C.c_uint32(7))
            tx.dests.put(900, DestEntry(flags=1, seq=3))
            assert tx.dests.get(900).seq == 3
            assert dict(tx.dests.raw_items(901))[bytes(C.c_uint32(900))] == bytes(
                DestEntry(flags=1, seq=3))
            assert bytes(C.c_uint32(900)) not in dict(tx.dests.raw_items(900))
            tx.svc_stats.put(3, IpVsStats(1, 2, 3, 4, 5))
            assert [v.inpkts for v in tx.svc_stats.get(3)] == [2] * ctl.st.svc_stats.ncpus
            tx.svc_stats.zero(3)
            assert [v.inpkts for v in tx.svc_stats.get(3)] == [0] * ctl.st.svc_stats.ncpus
            assert ctl.st.dests.get(900).seq == 0 and snapshot() == before  # nothing written yet
            raise RuntimeError
    assert snapshot() == before and journal_files(pin) == []
