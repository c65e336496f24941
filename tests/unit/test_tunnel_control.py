"""Tunnel (-i) real servers through xdplbadm on the fake maps: what is
stored (DestEntry's tun_type, tun_port, tun_flags), `-L --tun-info` and
`-S` byte for byte (ipvsadm 1.31's formats), `-S` -> `-R` giving the same
table, `-e` without tunnel options meaning ipip, and the refusals (gre)."""
import io
import socket
import sys

import pytest

from xdplb import adm, control
from xdplb.control import Control
from xdplb.structs import (IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GUE,
                           IP_VS_CONN_F_TUNNEL_TYPE_IPIP, IP_VS_TUNNEL_ENCAP_FLAG_CSUM,
                           IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM)

PROG = "xdplbadm"
SVC = "10.0.0.1:80"


@pytest.fixture
def xadm(fake_state, monkeypatch, capsys):
    """xdplbadm on the fake state: (exit code, stdout, stderr) of a command
    line (stdin for -R). The neighbours the control plane would have the
    kernel resolve are recorded, not asked for (no traffic from the unit tier)."""
    primed = []
    monkeypatch.setattr(adm.Ctx, "control", lambda self, create=False: Control(fake_state))
    monkeypatch.setattr(control, "prime_neighbour", primed.append)

    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = adm.run([PROG, *args])
        out, err = capsys.readouterr()
        return code, out, err
    run.state, run.primed = fake_state, primed
    return run


def dest_entries(state):
    """{address: DestEntry} of the used dests slots."""
    out = {}
    for slot in range(1, 16):
        d = state.dests.get(slot)
        if d is not None and d.flags:
            out[socket.inet_ntoa(bytes(d.addr))] = d
    return out


def add_four(xadm):
    assert xadm("-A", "-t", SVC, "-s", "rr")[0] == 0
    for extra in (["-r", "10.1.0.1:8080", "-i"],
                  ["-r", "10.1.0.2", "-i", "--tun-type", "ipip", "-w", "2"],
                  ["-r", "10.1.0.3", "-i", "--tun-type", "gue", "--tun-port", "6080"],
                  ["-r", "10.1.0.4", "-i", "--tun-type", "gue", "--tun-port", "6081",
                   "--tun-csum", "-w", "0"],
                  ["-r", "10.1.0.5", "-i", "--tun-type", "gue", "--tun-port", "6082",
                   "--tun-remcsum"],
                  ["-r", "10.1.0.6:8080", "-m"]):
        assert xadm("-a", "-t", SVC, *extra) == (0, "", "")


TUN_INFO = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
    "TCP  10.0.0.1:80 rr\n"
    "  -> 10.1.0.1:80                  Tunnel  ipip          1      0          0         \n"
    "  -> 10.1.0.2:80                  Tunnel  ipip          2      0          0         \n"
    "  -> 10.1.0.3:80                  Tunnel  gue:6080:-c   1      0          0         \n"
    "  -> 10.1.0.4:80                  Tunnel  gue:6081:+c   0      0          0         \n"
    "  -> 10.1.0.5:80                  Tunnel  gue:6082:r+c  1      0          0         \n"
    "  -> 10.1.0.6:8080                Masq    n/a           1      0          0         \n")

SAVED = (
    "-A -t 10.0.0.1:80 -s rr\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -i -w 1 --tun-type ipip\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -i -w 2 --tun-type ipip\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i -w 0 --tun-type gue --tun-port 6081 --tun-csum\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.5:80 -i -w 1 --tun-type gue --tun-port 6082 --tun-remcsum\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.6:8080 -m -w 1\n")


def test_tunnel_servers_are_stored_listed_and_saved(xadm):
    add_four(xadm)
    d = dest_entries(xadm.state)
    assert {a: (e.fwd, e.port, e.tun_type, socket.ntohs(e.tun_port), e.tun_flags)
            for a, e in d.items()} == {
        "10.1.0.1": (IP_VS_CONN_F_TUNNEL, socket.htons(80), IP_VS_CONN_F_TUNNEL_TYPE_IPIP, 0, 0),
        "10.1.0.2": (IP_VS_CONN_F_TUNNEL, socket.htons(80), IP_VS_CONN_F_TUNNEL_TYPE_IPIP, 0, 0),
        "10.1.0.3": (IP_VS_CONN_F_TUNNEL, socket.htons(80), IP_VS_CONN_F_TUNNEL_TYPE_GUE, 6080,
                     0),
        "10.1.0.4": (IP_VS_CONN_F_TUNNEL, socket.htons(80), IP_VS_CONN_F_TUNNEL_TYPE_GUE, 6081,
                     IP_VS_TUNNEL_ENCAP_FLAG_CSUM),
        "10.1.0.5": (IP_VS_CONN_F_TUNNEL, socket.htons(80), IP_VS_CONN_F_TUNNEL_TYPE_GUE, 6082,
                     IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM),
        "10.1.0.6": (0, socket.htons(8080), 0, 0, 0)}
    assert xadm("-L", "-n", "--tun-info") == (0, TUN_INFO, "")
    assert xadm("-S", "-n") == (0, SAVED, "")
    # tunnel servers are resolved as Route's are, Masq ones not
    assert xadm.primed == [f"10.1.0.{n}" for n in range(1, 6)]


def test_save_then_restore_gives_the_same_table(xadm):
    add_four(xadm)
    before = {a: bytes(e) for a, e in dest_entries(xadm.state).items()}
    assert xadm("-C")[0] == 0
    assert xadm("-R", stdin=SAVED) == (0, "", "")
    assert xadm("-S", "-n") == (0, SAVED, "")
    after = dest_entries(xadm.state)
    # the same attributes (slots and seqs are new ones)
    for a, raw in before.items():
        e = type(after[a]).from_buffer_copy(raw)
        assert (e.fwd, e.port, e.weight, e.tun_type, e.tun_port, e.tun_flags) == (
            after[a].fwd, after[a].port, after[a].weight, after[a].tun_type,
            after[a].tun_port, after[a].tun_flags)


def test_edit_without_tunnel_options_means_ipip(xadm):
    add_four(xadm)
    assert xadm("-e", "-t", SVC, "-r", "10.1.0.4", "-i") == (0, "", "")
    e = dest_entries(xadm.state)["10.1.0.4"]
    assert (e.tun_type, e.tun_port, e.tun_flags, e.weight) == (
        IP_VS_CONN_F_TUNNEL_TYPE_IPIP, 0, 0, 1)
    assert xadm("-e", "-t", SVC, "-r", "10.1.0.1", "-i", "--tun-type", "gue",
                "--tun-port", "7000", "--tun-csum") == (0, "", "")
    assert "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -i -w 1 --tun-type gue --tun-port 7000 " \
           "--tun-csum\n" in xadm("-S", "-n")[1]
    # -g drops the tunnel's attributes
    assert xadm("-e", "-t", SVC, "-r", "10.1.0.1", "-g") == (0, "", "")
    e = dest_entries(xadm.state)["10.1.0.1"]
    assert (e.tun_type, e.tun_port, e.tun_flags) == (0, 0, 0)


def test_gre_is_refused_and_changes_nothing(xadm):
    assert xadm("-A", "-t", SVC, "-s", "rr")[0] == 0
    for extra in ([], ["--tun-csum"], ["--tun-nocsum"]):
        code, out, err = xadm("-a", "-t", SVC, "-r", "10.1.0.9", "-i", "--tun-type", "gre",
                              *extra)
        assert (code, out) == (255, "")
        assert err.startswith("xdplb: GRE tunnels (--tun-type gre) are not supported yet")
    assert dest_entries(xadm.state) == {}
    code, _, err = xadm("-R", stdin="-a -t 10.0.0.1:80 -r 10.1.0.9 -i --tun-type gre\n"
                                    "-a -t 10.0.0.1:80 -r 10.1.0.8 -i\n")
    assert err.startswith("xdplb: GRE tunnels (--tun-type gre) are not supported yet")
    assert list(dest_entries(xadm.state)) == ["10.1.0.8"]


# (args, stderr): ipvsadm's tunnel option checks, exit code 2, nothing changed
TUNNEL_OPTION_ERRORS = [
    (["-i", "--tun-type", "foo"], "illegal tunnel type specified\n"),
    (["-i", "--tun-type", "gue"],
     "You need to supply the 'tun-port' option for the 'gue' tunnel type\n"),
    (["-i", "--tun-type", "gue", "--tun-csum", "--tun-remcsum"],
     "You need to supply the 'tun-port' option for the 'gue' tunnel type\n"),
    (["-i", "--tun-type", "gue", "--tun-port", "6080", "--tun-csum", "--tun-remcsum"],
     "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type\n"),
    (["-i", "--tun-type", "gue", "--tun-port", "6080", "--tun-remcsum", "--tun-nocsum"],
     "The option 'tun-remcsum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel "
     "type\n"),
    (["-i", "--tun-port", "6080"], "Illegal 'tun-port' option with the 'ipip' tunnel type\n"),
    (["-i", "--tun-csum"], "Illegal 'tun-csum' option with the 'ipip' tunnel type\n"),
    (["-i", "--tun-type", "gre", "--tun-port", "1"],
     "Illegal 'tun-port' option with the 'gre' tunnel type\n"),
    (["-i", "--tun-type", "gre", "--tun-remcsum"],
     "Illegal 'tun-remcsum' option with the 'gre' tunnel type\n"),
    (["-i", "--tun-type", "gre", "--tun-csum", "--tun-nocsum"],
     "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gre' tunnel type\n"),
    (["-i", "--tun-type", "gue", "--tun-port", "0"], "illegal tunnel port specified\n"),
    (["-i", "--tun-type", "gue", "--tun-port", "65536"], "illegal tunnel port specified\n"),
    (["-i", "--tun-type", "gue", "--tun-type", "gue"],
     "multiple 'tun-type' options specified\n"),
    (["-m", "--tun-type", "ipip"], "Tunnel options conflict with forward method\n"),
    (["--tun-type", "ipip"], "Tunnel options conflict with forward method\n"),
]


@pytest.mark.parametrize("extra,err", TUNNEL_OPTION_ERRORS,
                         ids=[" ".join(e) for e, _ in TUNNEL_OPTION_ERRORS])
def test_tunnel_option_errors(xadm, extra, err):
    assert xadm("-A", "-t", SVC, "-s", "rr")[0] == 0
    assert xadm("-a", "-t", SVC, "-r", "10.1.0.9", *extra) == (2, "", err)
    assert dest_entries(xadm.state) == {}


def test_tunnel_options_on_other_commands(xadm):
    assert xadm("-A", "-t", SVC, "--tun-type", "ipip") == (
        2, "", "Illegal 'tun-type' option with the 'add-service' command\n")
    assert xadm("-d", "-t", SVC, "-r", "10.1.0.9", "--tun-csum") == (
        2, "", "Illegal 'tun-csum' option with the 'delete-server' command\n")
