"""ipvsfmt against the captured ipvsadm 1.31 outputs (docs/ipvs-behaviour.md §4.9).

The input table and the expected texts are those of the capture; the
expected texts are kept as Python literals so trailing spaces are explicit.
"""
import pytest

from xdplb import ipvsfmt as F
from xdplb.model import Destination, Service, Stats

TABLE = """\
S 4 tcp 10.0.0.1 80 0 wlc 2 0 255.255.255.255 - 1234 56789 0 98765432 0 3 40 0 5000 0
D 4 192.168.1.3 80 3 1 0 0 0 1 0 10 100 0 1000 0 0 1 0 50 0
D 4 192.168.1.1 8080 0 3 0 0 5 2 0 99999999 100000000 999999999 1000000000 99999999999 12 123456789 3 4 5
D 4 192.168.1.2 80 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
S 4 udp 10.0.0.1 53 0 rr 2 0 255.255.255.255 - 0 0 0 0 0 0 0 0 0 0
D 4 172.17.0.2 53 0 1 0 0 0 7 0 0 0 0 0 0 0 0 0 0 0
S 4 tcp 10.0.0.2 443 0 rr 3 300 255.255.255.0 - 0 0 0 0 0 0 0 0 0 0
D 4 192.168.0.1 6443 0 1 100 50 1 0 2 0 0 0 0 0 0 0 0 0 0
S 4 tcp 0.0.0.0 0 5 wrr 3 360 255.255.255.255 - 0 0 0 0 0 0 0 0 0 0
D 4 192.168.2.1 0 3 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
S 4 tcp 200.1.1.1 80 0 lc 2 0 255.255.255.255 - 100000000000 100000000000000 0 0 0 0 0 0 0 0
S 6 tcp 2001:db8::1 80 0 sh 1a 0 128 - 0 0 0 0 0 0 0 0 0 0
D 6 2001:db8::a0a0 80 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
S 4 tcp 10.0.0.3 0 0 wlc 3 360 255.255.255.255 sip 0 0 0 0 0 0 0 0 0 0
S 4 sctp 10.0.0.4 5000 0 wlc 2 0 255.255.255.255 - 0 0 0 0 0 0 0 0 0 0
D 4 10.1.1.1 5000 2 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 6080 1
"""

EXPECTED = {
    'ipvsadm -L -n': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port Scheduler Flags\n'
        '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n'
        'TCP  200.1.1.1:80 lc\n'
        'TCP  10.0.0.1:80 wlc\n'
        '  -> 192.168.1.1:8080             Masq    3      5          2         \n'
        '  -> 192.168.1.2:80               Tunnel  0      0          0         \n'
        '  -> 192.168.1.3:80               Route   1      0          1         \n'
        'TCP  10.0.0.2:443 rr persistent 300 mask 255.255.255.0\n'
        '  -> 192.168.0.1:6443             Masq    1      1          0         \n'
        'TCP  10.0.0.3:0 wlc persistent 360 pe sip\n'
        'UDP  10.0.0.1:53 rr\n'
        '  -> 172.17.0.2:53                Masq    1      0          7         \n'
        'SCTP 10.0.0.4:5000 wlc\n'
        '  -> 10.1.1.1:5000                Tunnel  1      0          0         \n'
        'TCP  [2001:db8::1]:80 sh (sh-fallback,sh-port)\n'
        '  -> [2001:db8::a0a0]:80          Masq    1      0          0         \n'
        'FWM  5 wrr persistent 360\n'
        '  -> 192.168.2.1:0                Route   2      0          0         \n'
    ),
    'ipvsadm -L -n --stats': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n'
        '  -> RemoteAddress:Port\n'
        'TCP  200.1.1.1:80                     100G     100T        0        0        0\n'
        'TCP  10.0.0.1:80                      1234    56789        0 98765432        0\n'
        '  -> 192.168.1.1:8080             99999999  100000K  999999K    1000M   99999M\n'
        '  -> 192.168.1.2:80                      0        0        0        0        0\n'
        '  -> 192.168.1.3:80                     10      100        0     1000        0\n'
        'TCP  10.0.0.2:443                        0        0        0        0        0\n'
        '  -> 192.168.0.1:6443                    0        0        0        0        0\n'
        'TCP  10.0.0.3:0                          0        0        0        0        0\n'
        'UDP  10.0.0.1:53                         0        0        0        0        0\n'
        '  -> 172.17.0.2:53                       0        0        0        0        0\n'
        'SCTP 10.0.0.4:5000                       0        0        0        0        0\n'
        '  -> 10.1.1.1:5000                       0        0        0        0        0\n'
        'TCP  [2001:db8::1]:80                    0        0        0        0        0\n'
        '  -> [2001:db8::a0a0]:80                 0        0        0        0        0\n'
        'FWM  5                                   0        0        0        0        0\n'
        '  -> 192.168.2.1:0                       0        0        0        0        0\n'
    ),
    'ipvsadm -L -n --stats --exact': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n'
        '  -> RemoteAddress:Port\n'
        'TCP  200.1.1.1:80                 100000000000 100000000000000        0        0        0\n'
        'TCP  10.0.0.1:80                      1234    56789        0 98765432        0\n'
        '  -> 192.168.1.1:8080             99999999 100000000 999999999 1000000000 99999999999\n'
        '  -> 192.168.1.2:80                      0        0        0        0        0\n'
        '  -> 192.168.1.3:80                     10      100        0     1000        0\n'
        'TCP  10.0.0.2:443                        0        0        0        0        0\n'
        '  -> 192.168.0.1:6443                    0        0        0        0        0\n'
        'TCP  10.0.0.3:0                          0        0        0        0        0\n'
        'UDP  10.0.0.1:53                         0        0        0        0        0\n'
        '  -> 172.17.0.2:53                       0        0        0        0        0\n'
        'SCTP 10.0.0.4:5000                       0        0        0        0        0\n'
        '  -> 10.1.1.1:5000                       0        0        0        0        0\n'
        'TCP  [2001:db8::1]:80                    0        0        0        0        0\n'
        '  -> [2001:db8::a0a0]:80                 0        0        0        0        0\n'
        'FWM  5                                   0        0        0        0        0\n'
        '  -> 192.168.2.1:0                       0        0        0        0        0\n'
    ),
    'ipvsadm -L -n --rate': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n'
        '  -> RemoteAddress:Port\n'
        'TCP  200.1.1.1:80                        0        0        0        0        0\n'
        'TCP  10.0.0.1:80                         3       40        0     5000        0\n'
        '  -> 192.168.1.1:8080                   12 123456789        3        4        5\n'
        '  -> 192.168.1.2:80                      0        0        0        0        0\n'
        '  -> 192.168.1.3:80                      0        1        0       50        0\n'
        'TCP  10.0.0.2:443                        0        0        0        0        0\n'
        '  -> 192.168.0.1:6443                    0        0        0        0        0\n'
        'TCP  10.0.0.3:0                          0        0        0        0        0\n'
        'UDP  10.0.0.1:53                         0        0        0        0        0\n'
        '  -> 172.17.0.2:53                       0        0        0        0        0\n'
        'SCTP 10.0.0.4:5000                       0        0        0        0        0\n'
        '  -> 10.1.1.1:5000                       0        0        0        0        0\n'
        'TCP  [2001:db8::1]:80                    0        0        0        0        0\n'
        '  -> [2001:db8::a0a0]:80                 0        0        0        0        0\n'
        'FWM  5                                   0        0        0        0        0\n'
        '  -> 192.168.2.1:0                       0        0        0        0        0\n'
    ),
    'ipvsadm -L -n --thresholds': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n'
        '  -> RemoteAddress:Port\n'
        'TCP  200.1.1.1:80 lc\n'
        'TCP  10.0.0.1:80 wlc\n'
        '  -> 192.168.1.1:8080             0          0          5          2         \n'
        '  -> 192.168.1.2:80               0          0          0          0         \n'
        '  -> 192.168.1.3:80               0          0          0          1         \n'
        'TCP  10.0.0.2:443 rr persistent 300 mask 255.255.255.0\n'
        '  -> 192.168.0.1:6443             100        50         1          0         \n'
        'TCP  10.0.0.3:0 wlc persistent 360 pe sip\n'
        'UDP  10.0.0.1:53 rr\n'
        '  -> 172.17.0.2:53                0          0          0          7         \n'
        'SCTP 10.0.0.4:5000 wlc\n'
        '  -> 10.1.1.1:5000                0          0          0          0         \n'
        'TCP  [2001:db8::1]:80 sh (sh-fallback,sh-port)\n'
        '  -> [2001:db8::a0a0]:80          0          0          0          0         \n'
        'FWM  5 wrr persistent 360\n'
        '  -> 192.168.2.1:0                0          0          0          0         \n'
    ),
    'ipvsadm -L -n --persistent-conn': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n'
        '  -> RemoteAddress:Port\n'
        'TCP  200.1.1.1:80 lc\n'
        'TCP  10.0.0.1:80 wlc\n'
        '  -> 192.168.1.1:8080             3         0           5          2         \n'
        '  -> 192.168.1.2:80               0         0           0          0         \n'
        '  -> 192.168.1.3:80               1         0           0          1         \n'
        'TCP  10.0.0.2:443 rr persistent 300 mask 255.255.255.0\n'
        '  -> 192.168.0.1:6443             1         2           1          0         \n'
        'TCP  10.0.0.3:0 wlc persistent 360 pe sip\n'
        'UDP  10.0.0.1:53 rr\n'
        '  -> 172.17.0.2:53                1         0           0          7         \n'
        'SCTP 10.0.0.4:5000 wlc\n'
        '  -> 10.1.1.1:5000                1         0           0          0         \n'
        'TCP  [2001:db8::1]:80 sh (sh-fallback,sh-port)\n'
        '  -> [2001:db8::a0a0]:80          1         0           0          0         \n'
        'FWM  5 wrr persistent 360\n'
        '  -> 192.168.2.1:0                2         0           0          0         \n'
    ),
    'ipvsadm -L -n --tun-info': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port Scheduler Flags\n'
        '  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n'
        'TCP  200.1.1.1:80 lc\n'
        'TCP  10.0.0.1:80 wlc\n'
        '  -> 192.168.1.1:8080             Masq    n/a           3      5          2         \n'
        '  -> 192.168.1.2:80               Tunnel  ipip          0      0          0         \n'
        '  -> 192.168.1.3:80               Route   n/a           1      0          1         \n'
        'TCP  10.0.0.2:443 rr persistent 300 mask 255.255.255.0\n'
        '  -> 192.168.0.1:6443             Masq    n/a           1      1          0         \n'
        'TCP  10.0.0.3:0 wlc persistent 360 pe sip\n'
        'UDP  10.0.0.1:53 rr\n'
        '  -> 172.17.0.2:53                Masq    n/a           1      0          7         \n'
        'SCTP 10.0.0.4:5000 wlc\n'
        '  -> 10.1.1.1:5000                Tunnel  gue:6080:+c   1      0          0         \n'
        'TCP  [2001:db8::1]:80 sh (sh-fallback,sh-port)\n'
        '  -> [2001:db8::a0a0]:80          Masq    n/a           1      0          0         \n'
        'FWM  5 wrr persistent 360\n'
        '  -> 192.168.2.1:0                Route   n/a           2      0          0         \n'
    ),
    'ipvsadm -S -n': (
        '-A -t 200.1.1.1:80 -s lc\n'
        '-A -t 10.0.0.1:80 -s wlc\n'
        '-a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m -w 3\n'
        '-a -t 10.0.0.1:80 -r 192.168.1.2:80 -i -w 0 --tun-type ipip\n'
        '-a -t 10.0.0.1:80 -r 192.168.1.3:80 -g -w 1\n'
        '-A -t 10.0.0.2:443 -s rr -p 300 -M 255.255.255.0\n'
        '-a -t 10.0.0.2:443 -r 192.168.0.1:6443 -m -w 1\n'
        '-A -t 10.0.0.3:0 -s wlc -p 360 --pe sip\n'
        '-A -u 10.0.0.1:53 -s rr\n'
        '-a -u 10.0.0.1:53 -r 172.17.0.2:53 -m -w 1\n'
        '-A --sctp-service 10.0.0.4:5000 -s wlc\n'
        '-a --sctp-service 10.0.0.4:5000 -r 10.1.1.1:5000 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n'
        '-A -t [2001:db8::1]:80 -s sh -b sh-fallback,sh-port\n'
        '-a -t [2001:db8::1]:80 -r [2001:db8::a0a0]:80 -m -w 1\n'
        '-A -f 5 -s wrr -p 360\n'
        '-a -f 5 -r 192.168.2.1:0 -g -w 2\n'
    ),
    'ipvsadm -L': (
        'IP Virtual Server version 1.2.1 (size=4096)\n'
        'Prot LocalAddress:Port Scheduler Flags\n'
        '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n'
        'TCP  200.1.1.1:http lc\n'
        'TCP  10.0.0.1:http wlc\n'
        '  -> 192.168.1.1:http-alt         Masq    3      5          2         \n'
        '  -> 192.168.1.2:http             Tunnel  0      0          0         \n'
        '  -> 192.168.1.3:http             Route   1      0          1         \n'
        'TCP  10.0.0.2:https rr persistent 300 mask 255.255.255.0\n'
        '  -> 192.168.0.1:6443             Masq    1      1          0         \n'
        'TCP  10.0.0.3:0 wlc persistent 360 pe sip\n'
        'UDP  10.0.0.1:domain rr\n'
        '  -> 172.17.0.2:domain            Masq    1      0          7         \n'
        'SCTP 10.0.0.4:5000 wlc\n'
        '  -> 10.1.1.1:5000                Tunnel  1      0          0         \n'
        'TCP  [2001:db8::1]:http sh (sh-fallback,sh-port)\n'
        '  -> [2001:db8::a0a0]:http        Masq    1      0          0         \n'
        'FWM  5 wrr persistent 360\n'
        '  -> 192.168.2.1:0                Route   2      0          0         \n'
    ),
    'ipvsadm -L -n --timeout': (
        'Timeout (tcp tcpfin udp): 900 120 300\n'
    ),
    'ipvsadm -L -n -c': (
        'IPVS connection entries\n'
        'pro expire state       source             virtual            destination\n'
        'TCP 14:57  ESTABLISHED 192.168.10.5:54321 10.0.0.1:80        192.168.1.1:8080\n'
        'TCP 01:05  FIN_WAIT    192.168.10.5:54322 10.0.0.1:80        192.168.1.1:8080\n'
        'UDP 04:59  UDP         192.168.10.6:33333 10.0.0.1:53        172.17.0.2:53\n'
        'TCP 59:59  NONE        192.168.10.0:0     10.0.0.2:443       192.168.0.1:6443\n'
        'IP  05:59  NONE        192.168.10.5:0     0.0.0.5:0          192.168.2.1:0\n'
        'UDP 04:59  NONE        192.168.10.7:5060  10.0.0.5:5060      192.168.1.3:5060\n'
        'TCP 00:59  SYN_RECV    [2001:db8::99]:54321 [2001:db8::1]:80   [2001:db8::a0a0]:80\n'
    ),
    'ipvsadm -L -n -c --persistent-conn': (
        'IPVS connection entries\n'
        'pro expire state       source             virtual            destination        pe name          pe_data\n'
        'TCP 14:57  ESTABLISHED 192.168.10.5:54321 10.0.0.1:80        192.168.1.1:8080\n'
        'TCP 01:05  FIN_WAIT    192.168.10.5:54322 10.0.0.1:80        192.168.1.1:8080\n'
        'UDP 04:59  UDP         192.168.10.6:33333 10.0.0.1:53        172.17.0.2:53\n'
        'TCP 59:59  NONE        192.168.10.0:0     10.0.0.2:443       192.168.0.1:6443\n'
        'IP  05:59  NONE        192.168.10.5:0     0.0.0.5:0          192.168.2.1:0\n'
        'UDP 04:59  NONE        192.168.10.7:5060  10.0.0.5:5060      192.168.1.3:5060 sip                1234@example.com\n'
        'TCP 00:59  SYN_RECV    [2001:db8::99]:54321 [2001:db8::1]:80   [2001:db8::a0a0]:80\n'
    ),
}


def parse_table(text=TABLE):
    """S/D lines of the capture harness -> model objects (list order kept)."""
    services = []
    for line in text.splitlines():
        f = line.split()
        if f[0] == "S":
            af = 2 if f[1] == "4" else 10
            proto = {"tcp": 6, "udp": 17, "sctp": 132}[f[2]]
            nums = [int(x) for x in f[11:]]
            services.append(Service(
                proto=proto, af=af, addr=f[3], port=int(f[4]), fwmark=int(f[5]), sched=f[6],
                flags=int(f[7], 16), timeout=int(f[8]),
                netmask=f[9] if af == 2 else int(f[9]), pe="" if f[10] == "-" else f[10],
                stats=Stats(*nums[:5]), rate=Stats(*nums[5:10])))
        else:
            af = 2 if f[1] == "4" else 10
            n = [int(x) for x in f[3:]]
            d = Destination(addr=f[2], af=af, port=n[0], fwd=n[1], weight=n[2],
                            u_threshold=n[3], l_threshold=n[4], active=n[5], inactive=n[6],
                            persist=n[7], stats=Stats(*n[8:13]), rate=Stats(*n[13:18]))
            if len(n) > 18:
                d.tun_type, d.tun_port, d.tun_flags = n[18:21]
            services[-1].dests.append(d)
    return services


class NoNames(F.Resolver):
    """No host names (no DNS in tests); service names from /etc/services."""

    def host(self, af, addr):
        return None


FORMATS = {
    "ipvsadm -L -n": F.FMT_NUMERIC,
    "ipvsadm -L -n --stats": F.FMT_NUMERIC | F.FMT_STATS,
    "ipvsadm -L -n --stats --exact": F.FMT_NUMERIC | F.FMT_STATS | F.FMT_EXACT,
    "ipvsadm -L -n --rate": F.FMT_NUMERIC | F.FMT_RATE,
    "ipvsadm -L -n --thresholds": F.FMT_NUMERIC | F.FMT_THRESHOLDS,
    "ipvsadm -L -n --persistent-conn": F.FMT_NUMERIC | F.FMT_PERSISTENTCONN,
    "ipvsadm -L -n --tun-info": F.FMT_NUMERIC | F.FMT_TUN_INFO,
    "ipvsadm -S -n": F.FMT_NUMERIC | F.FMT_RULE,
    "ipvsadm -L": F.FMT_NONE,
}


@pytest.mark.parametrize("cmd", list(FORMATS))
def test_listing_matches_reference(cmd):
    got = F.list_all(parse_table(), FORMATS[cmd], resolver=NoNames())
    assert got == "".join(EXPECTED[cmd])


def test_timeout_line():
    assert F.timeout_text() == "".join(EXPECTED["ipvsadm -L -n --timeout"])


CONNS = [
    ("TCP", 2, "192.168.10.5", 54321, "10.0.0.1", 80, "192.168.1.1", 8080, "ESTABLISHED", 897, "", ""),
    ("TCP", 2, "192.168.10.5", 54322, "10.0.0.1", 80, "192.168.1.1", 8080, "FIN_WAIT", 65, "", ""),
    ("UDP", 2, "192.168.10.6", 33333, "10.0.0.1", 53, "172.17.0.2", 53, "UDP", 299, "", ""),
    ("TCP", 2, "192.168.10.0", 0, "10.0.0.2", 443, "192.168.0.1", 6443, "NONE", 3599, "", ""),
    ("IP", 2, "192.168.10.5", 0, "0.0.0.5", 0, "192.168.2.1", 0, "NONE", 359, "", ""),
    ("UDP", 2, "192.168.10.7", 5060, "10.0.0.5", 5060, "192.168.1.3", 5060, "NONE", 299,
     "sip", "1234@example.com"),
    ("TCP", 10, "2001:db8::99", 54321, "2001:db8::1", 80, "2001:db8::a0a0", 80, "SYN_RECV", 59, "", ""),
]


def test_conn_listing():
    assert F.conn_listing(CONNS, F.FMT_NUMERIC) == "".join(EXPECTED["ipvsadm -L -n -c"])
    assert (F.conn_listing(CONNS, F.FMT_NUMERIC | F.FMT_PERSISTENTCONN)
            == "".join(EXPECTED["ipvsadm -L -n -c --persistent-conn"]))


@pytest.mark.parametrize("value,text", [
    (99999999, " 99999999"), (100000000, "  100000K"), (999999999, "  999999K"),
    (1000000000, "    1000M"), (99999999999, "   99999M"), (100000000000, "     100G"),
    (100000000000000, "     100T"), (0, "        0")])
def test_largenum(value, text):
    assert F.largenum(value) == text


def test_largenum_exact():
    assert F.largenum(12345678, F.FMT_EXACT) == " 12345678"
    assert F.largenum(123456789, F.FMT_EXACT) == " 123456789"


def test_sort_int32_quirk():
    a = Service(proto=6, addr="10.0.0.1", port=80)
    b = Service(proto=6, addr="200.1.1.1", port=80)
    c = Service(proto=6, addr="10.0.0.1", port=8080)
    u = Service(proto=17, addr="1.1.1.1", port=53)
    got = [(s.addr, s.port, s.proto) for s in F.sort_services([u, c, a, b])]
    assert got == [("200.1.1.1", 80, 6), ("10.0.0.1", 80, 6), ("10.0.0.1", 8080, 6),
                   ("1.1.1.1", 53, 17)]


def test_nosort_keeps_order_and_truncation():
    s = Service(proto=6, addr="10.0.0.1", port=80, sched="rr",
                dests=[Destination("10.0.0.3", 80, fwd=0), Destination("10.0.0.2", 80, fwd=0)])
    out = F.list_all([s], F.FMT_NUMERIC | F.FMT_NOSORT)
    assert out.splitlines()[3:] == ["TCP  10.0.0.1:80 rr",
                                   "  -> " + "10.0.0.3:80".ljust(28) + " Masq    1      0          0         ",
                                   "  -> " + "10.0.0.2:80".ljust(28) + " Masq    1      0          0         "]
    assert F.list_service(s, F.FMT_NUMERIC).startswith("Prot LocalAddress:Port Scheduler Flags\n")


class LongNames(F.Resolver):
    def host(self, af, addr):
        return "a-very-long-host-name-for-truncation.example.com"


def test_name_truncation():
    s = Service(proto=6, addr="10.0.0.1", port=80, sched="rr",
                dests=[Destination("10.0.0.3", 80, fwd=0)])
    lines = F.list_all([s], F.FMT_NONE, resolver=LongNames()).splitlines()
    assert lines[3] == "TCP  a-very-long-host-name-for-tr rr"       # svc_name[33]
    assert lines[4].startswith("  -> a-very-long-host-name-for-tr Masq")  # dname[28]
    rule = F.list_all([s], F.FMT_RULE, resolver=LongNames())
    assert rule.splitlines()[0] == "-A -t a-very-long-host-name-for-truncation.example.com:http -s rr"
