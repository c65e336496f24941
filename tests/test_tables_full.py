"""Full service, destination and schedule tables: a clear error, nothing changed.

The kernel's tables grow; xdplb's maps have the size they were compiled
with. A state compiled small (4 services, 7 destinations, 64 schedule
entries) shows each refusal, through the real xdplbadm, with a snapshot of
every map before and after.
"""
import os

import pytest

from test_adm import adm, create_stub_state, ok, snapshot
from xdplb import state as statemod

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bpffs)")

SMALL = ["-DXDPLB_MAX_SERVICES=4", "-DXDPLB_MAX_DESTS=8", "-DXDPLB_MAX_RING=64"]


@pytest.fixture
def small(monkeypatch):
    folder = f"/sys/fs/bpf/xdplb/test-{os.getpid()}-small"
    monkeypatch.setenv("XDPLB_PIN_DIR", folder)
    create_stub_state(folder, SMALL)
    try:
        yield folder
    finally:
        statemod.remove(folder)


def refused(args, err, stdin=None):
    before = snapshot()
    rc, out, e = adm(*args, stdin=stdin)
    assert (rc, out, e) == (255, "", err), args
    assert snapshot() == before, f"{args} changed the maps"


def test_services_table_full(small):
    for i in range(4):
        ok("-A", "-t", f"10.0.0.{i + 1}:80")
    err = ("Memory allocation problem: xdplb's services table is full (4 services, the size "
           "its maps were compiled with)\n")
    refused(["-A", "-t", "10.0.0.9:80"], err)
    refused(["-A", "-u", "10.0.0.1:53"], err)
    ok("-D", "-t", "10.0.0.4:80")
    ok("-A", "-t", "10.0.0.9:80")       # a freed slot is used again


def test_destinations_table_full(small):
    ok("-A", "-t", "10.0.0.1:80", "-s", "rr")
    for i in range(7):
        ok("-a", "-t", "10.0.0.1:80", "-r", f"10.1.0.{i + 1}", "-m")
    err = ("Memory allocation problem: xdplb's destinations table is full (7 destinations, "
           "the size its maps were compiled with)\n")
    refused(["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.99", "-m"], err)
    ok("-d", "-t", "10.0.0.1:80", "-r", "10.1.0.3")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.99", "-m")


def test_restore_past_a_full_table(small):
    """As ipvsadm -R: a refused line is reported and the rest goes on."""
    ok("-A", "-t", "10.0.0.1:80")
    lines = "".join(f"-A -t 10.0.0.{i}:80\n" for i in range(2, 7))
    rc, out, e = adm("-R", stdin=lines)
    full = ("Memory allocation problem: xdplb's services table is full (4 services, the size "
            "its maps were compiled with)\n")
    assert (rc, e) == (255, 2 * full), (rc, e)
    assert ok("-S", "-n") == "".join(f"-A -t 10.0.0.{i}:80 -s wlc\n" for i in range(1, 5))


def test_schedule_table_full(small):
    ok("-A", "-t", "10.0.0.1:80", "-s", "wrr")
    ok("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1", "-m", "-w", "40")
    refused(["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.2", "-m", "-w", "39"],
            "xdplb: the wrr schedule of this service needs 79 ring entries but only 63 of 64 "
            "are free; use smaller weights or weights with a common divisor\n")
