"""The unprivileged tier: everything here runs as an ordinary user, without
bcc, root, bpffs or a network (`pytest tests/unit`, well under 30 s).

Nothing imported here may need root; the fixtures below keep the tests from
reaching what would (bcc, name lookups, the state lock in /run/xdplb).
"""
import socket
import sys

import pytest

from .fakemaps import FakeState
from xdplb import state as statemod


@pytest.fixture(autouse=True)
def no_bcc_no_network(monkeypatch):
    """`import bcc` fails (whatever reaches the compiler is not a unit test) and
    names do not resolve (as in a netns without network): results never
    depend on this machine's DNS."""
    monkeypatch.setitem(sys.modules, "bcc", None)

    def no_lookup(name):
        try:
            socket.inet_aton(name)
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return name
    monkeypatch.setattr(socket, "gethostbyname", no_lookup)


@pytest.fixture
def fake_state(tmp_path, monkeypatch):
    """A FakeState whose folder, state lock and journal are in tmp_path
    (state.LOCK_DIR is /run/xdplb, root's, otherwise)."""
    monkeypatch.setattr(statemod, "LOCK_DIR", str(tmp_path / "run"))
    folder = tmp_path / "state"
    folder.mkdir()
    return FakeState(str(folder))
