"""`xdplb drain` in the lab (xdplb/lab.py): a real server carrying a long-lived
TCP connection, and another carrying a UDP flow, are drained at once: each
weight falls to 0, new connections avoid the server, the open ones keep
working, and each drain ends (and removes the server) only once its
connections are gone: the TCP one reset by its client (CLOSE, 10 s), the UDP
one idle past the UDP timeout. A drain whose deadline passes first exits 1
and leaves the server at weight 0."""
import socket
import subprocess
import sys
import time

from conftest import ECHO, lab_connect, lab_echo, xdplb_argv
from xdplb import lab as xlab

VIP = xlab.VIP
TPORT, UPORT = 7200, 7201
RS1, RS2 = xlab.BACKENDS["rs1"], xlab.BACKENDS["rs2"]


def _rows(lab, proto):
    """-L -c -n rows of proto: (client port, real server address)."""
    out = lab.adm("-L", "-c", "-n").stdout.splitlines()[2:]
    return [(int(f[3].rsplit(":", 1)[1]), f[5].rsplit(":", 1)[0])
            for f in (line.split() for line in out) if f and f[0] == proto]


def _weight(lab, svc_opt, vip_port, rs):
    for line in lab.adm("-L", "-n", svc_opt, vip_port).stdout.splitlines():
        if line.split()[1:2] == [rs]:
            return int(line.split()[3])
    return None


def _drain(lab, *args):
    return subprocess.Popen(lab.cmd("lb", xdplb_argv("drain", *args)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_drain_waits_for_tcp_and_udp_then_removes(xlab_lab):
    lab, client = xlab_lab, xlab_lab.node("client")
    tcp_svc, udp_svc = f"{VIP}:{TPORT}", f"{VIP}:{UPORT}"
    lab.adm("--set", "0", "0", "3")              # UDP entries idle out after 3 s
    lab.adm("-A", "-t", tcp_svc, "-s", "rr")
    lab.adm("-A", "-u", udp_svc, "-s", "rr")
    for rs in (RS1, RS2):
        lab.adm("-a", "-t", tcp_svc, "-r", f"{rs}:{TPORT}", "-m")
        lab.adm("-a", "-u", udp_svc, "-r", f"{rs}:{UPORT}", "-m")
    for node, rs in (("rs1", RS1), ("rs2", RS2)):
        lab.start_server(node, [sys.executable, "-c", ECHO, rs, str(TPORT)])
    drains = []
    try:
        long = lab_connect(client, VIP, TPORT)
        assert lab_echo(long, b"hello\n") == b"hello\n"
        tcp_rs = dict(_rows(lab, "TCP"))[long.getsockname()[1]]
        with client.entered():
            flow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flow.sendto(b"datagram", (VIP, UPORT))
        time.sleep(0.2)
        udp_rs = dict(_rows(lab, "UDP"))[flow.getsockname()[1]]

        drains.append(_drain(lab, "-t", tcp_svc, "-r", f"{tcp_rs}:{TPORT}", "--over", "2s",
                             "--remove", "--deadline", "60s"))
        drains.append(_drain(lab, "-u", udp_svc, "-r", f"{udp_rs}:{UPORT}", "--over", "2s",
                             "--remove", "--deadline", "60s"))
        deadline = time.monotonic() + 20
        while _weight(lab, "-t", tcp_svc, f"{tcp_rs}:{TPORT}") != 0:
            assert time.monotonic() < deadline, "the weight did not reach 0"
            time.sleep(0.2)
        # new connections avoid the drained server; the open one still works
        fresh = [lab_connect(client, VIP, TPORT) for _ in range(4)]
        rows = dict(_rows(lab, "TCP"))
        assert {rows[s.getsockname()[1]] for s in fresh} == {RS1, RS2} - {tcp_rs}
        for s in fresh:
            s.close()
        for _ in range(10):                       # the UDP flow goes on, then stops
            flow.sendto(b"datagram", (VIP, UPORT))
            time.sleep(0.1)
        assert lab_echo(long, b"still here\n") == b"still here\n"
        assert all(d.poll() is None for d in drains), "a drain ended with connections open"
        long.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        long.close()                               # RST: CLOSE, 10 s
        flow.close()
        for d in drains:
            out, err = d.communicate(timeout=60)
            assert d.returncode == 0, out + err
            assert "weight 0" in out and "has no connections left" in out and "removed" in out
        assert _weight(lab, "-t", tcp_svc, f"{tcp_rs}:{TPORT}") is None
        assert _weight(lab, "-u", udp_svc, f"{udp_rs}:{UPORT}") is None
    finally:
        for d in drains:
            if d.poll() is None:
                d.terminate()
                d.wait(timeout=30)
        lab.adm("-D", "-t", tcp_svc, check=False)
        lab.adm("-D", "-u", udp_svc, check=False)
        lab.adm("--set", "900", "120", "300", check=False)


def test_drain_deadline_leaves_the_server_quiesced(xlab_lab):
    lab, client = xlab_lab, xlab_lab.node("client")
    svc = f"{VIP}:{TPORT}"
    lab.adm("-A", "-t", svc, "-s", "rr")
    lab.adm("-a", "-t", svc, "-r", f"{RS1}:{TPORT}", "-m", "-w", "3")
    lab.start_server("rs1", [sys.executable, "-c", ECHO, RS1, str(TPORT)])
    try:
        long = lab_connect(client, VIP, TPORT)
        assert lab_echo(long, b"x\n") == b"x\n"
        d = _drain(lab, "-t", svc, "-r", f"{RS1}:{TPORT}", "--deadline", "2s", "--remove")
        out, err = d.communicate(timeout=60)
        assert d.returncode == 1, out + err
        assert "deadline: 1 active and 0 inactive connections left" in out
        assert _weight(lab, "-t", svc, f"{RS1}:{TPORT}") == 0
        assert lab_echo(long, b"y\n") == b"y\n"
        long.close()
        bad = lab.run("lb", xdplb_argv("drain", "-t", svc, "-r", "10.9.9.9:1"), check=False)
        assert bad.returncode == 1 and "No such destination" in bad.stderr
        both = lab.run("lb", xdplb_argv("drain", "-r", f"{RS1}:{TPORT}"), check=False)
        assert both.returncode == 2 and "exactly one of -t" in both.stderr
    finally:
        lab.adm("-D", "-t", svc, check=False)
