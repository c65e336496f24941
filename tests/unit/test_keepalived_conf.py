"""keepalived.conf's lexer and load-balancing parser (xdplb/keepalived/):
every keyword, include, and errors with file and line."""
import os

import pytest

from xdplb import daemon, model
from xdplb.keepalived import conf, lexer
from xdplb.keepalived.model import Check, RealServer, Script, Url
from xdplb.model import IPPROTO_TCP, IPPROTO_UDP
from xdplb.structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_MASQ, IP_VS_CONN_F_TUNNEL,
                           IP_VS_SVC_F_PERSISTENT)

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "keepalived")
NOBODY = (65534, 65534)


def path(name):
    return os.path.join(DATA, name)


def errors(text, tmp_path, name="keepalived.conf"):
    """The error lines parsing text gives."""
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(lexer.ConfigError) as e:
        conf.parse(str(f))
    return str(e.value).replace(str(tmp_path) + "/", "")


def vs_text(body, rs_body="", header="10.0.0.1 80"):
    return (f"virtual_server {header} {{\n{body}\n"
            f"    real_server 10.1.0.1 80 {{\n{rs_body}\n    }}\n}}\n")


def test_ipv6_virtual_and_real_servers(tmp_path):
    """keepalived's `virtual_server 2001:db8::1 80 {`: addresses as inet_ntop
    writes them, persistence_granularity a prefix length (128 by default)."""
    f = tmp_path / "keepalived.conf"
    f.write_text("virtual_server 2001:DB8:0::1 80 {\n lb_kind DR\n persistence_timeout 60\n"
                 " persistence_granularity 64\n"
                 " real_server 2001:db8:80::2 80 {\n  TCP_CHECK {\n   connect_ip fd00::9\n  }\n"
                 " }\n}\nvirtual_server fd00:100::1 53 {\n protocol UDP\n"
                 " real_server fd00:80::5 53 {\n }\n}\n")
    web, dns = conf.parse(str(f)).virtual_servers
    assert (web.endpoints, web.name, web.timeout, web.netmask) == \
        ((("2001:db8::1", 80),), "[2001:db8::1]:80", 60, 64)
    assert web.real_servers[0].addr == "2001:db8:80::2"
    [svc] = web.services()
    assert (svc.af, svc.addr, svc.netmask) == (model.AF_INET6, "2001:db8::1", 64)
    assert dns.services()[0].netmask == 128 and dns.real_servers[0].addr == "fd00:80::5"


def test_every_keyword():
    cfg = conf.parse(path("every_keyword.conf"))
    where = lambda n: lexer.Where(path("every_keyword.conf"), n)  # noqa: E731
    assert cfg.ignored == [("global_defs (but script_user, enable_script_security)", where(3)),
                           ("vrrp_instance", where(12))]
    assert (cfg.script_user, cfg.script_security) == (NOBODY, True)
    web, dns = cfg.virtual_servers
    assert (web.proto, web.endpoints, web.name, web.sched) == \
        (IPPROTO_TCP, (("10.10.10.2", 80),), "[10.10.10.2]:80", "mh")
    assert web.flags == IP_VS_SVC_F_PERSISTENT | 0x10            # mh-port
    assert (web.timeout, web.netmask, web.quorum, web.hysteresis) == (600, "255.255.255.0", 2, 1)
    assert (web.alpha, web.omega) == (True, True)
    assert web.sorry_server == RealServer("192.168.200.200", 1358, 1, IP_VS_CONN_F_MASQ, True)
    rs1, rs2 = web.real_servers
    assert (rs1.addr, rs1.port, rs1.weight, rs1.fwd, rs1.inhibit, rs1.alpha) == \
        ("192.168.200.2", 8080, 3, IP_VS_CONN_F_MASQ, True, True)
    assert (rs1.u_threshold, rs1.l_threshold) == (100, 10)
    assert rs1.notify_up == Script(("/bin/true", "up"), *NOBODY)
    assert (rs1.notify_up.where.line, rs1.notify_down.where.line) == (46, 47)
    assert rs1.notify_down == Script(("/bin/true",), *NOBODY)
    assert rs1.checks == (Check(
        "HTTP_GET", "192.168.201.2", 8081, connect_timeout=3.0, retry=3, delay_before_retry=3.0,
        delay_loop=2.5, alpha=True, bindto="192.168.200.1", bind_port=40000,
        urls=(Url("/testurl/test.jsp", ("640205b7b0fc66c1ea91c463fac6334d",)),
              Url("/testurl2/test.jsp", (), ((200, 200), (300, 399)), "other.example.com")),
        virtualhost="www.example.com"),)
    assert (rs2.inhibit, rs2.alpha) == (False, False)
    ssl, tcp = rs2.checks
    # timers: the real server's (delay_loop 7, retry 4), else the virtual server's
    assert (ssl.kind, ssl.connect_timeout, ssl.retry, ssl.delay_before_retry, ssl.delay_loop,
            ssl.virtualhost) == ("SSL_GET", 4.0, 4, 0.5, 7.0, "secure.example.com")
    assert (tcp.kind, tcp.connect_timeout, tcp.retry) == ("TCP_CHECK", 1.0, 4)
    assert (dns.proto, dns.sched) == (IPPROTO_UDP, "wrr")
    [rs] = dns.real_servers
    assert (rs.port, rs.weight, rs.fwd) == (53, 0, IP_VS_CONN_F_DROUTE)   # DR: the VS's port
    misc, udp = rs.checks
    assert misc.script == Script(("/bin/true", "--check", "192.168.200.4"), *NOBODY)
    assert (misc.misc_timeout, misc.misc_dynamic, misc.retry, misc.delay_loop) == \
        (5.0, True, 1, 9.0)
    assert (udp.payload, udp.require_reply, udp.min_reply_length, udp.max_reply_length) == \
        (b"\x01\x02\xff", b"\x0a\x0b", 2, 64)
    # keepalived's defaults: delay_loop 60, connect_timeout 5, retry 1, delay_before_retry 1
    assert (udp.delay_loop, udp.connect_timeout, udp.retry, udp.delay_before_retry) == \
        (60.0, 5.0, 1, 1.0)


def test_defaults(tmp_path):
    f = tmp_path / "k.conf"
    f.write_text(vs_text("", "HTTP_GET { url { path / } }\nMISC_CHECK { misc_path /bin/true }"))
    [vs] = conf.parse(str(f)).virtual_servers
    assert (vs.proto, vs.sched, vs.flags, vs.quorum, vs.sorry_server) == \
        (IPPROTO_TCP, "wlc", 0, 1, None)
    [rs] = vs.real_servers
    assert (rs.weight, rs.fwd, rs.inhibit) == (1, IP_VS_CONN_F_MASQ, False)
    http, misc = rs.checks
    assert (http.delay_loop, http.connect_timeout, http.retry, http.delay_before_retry) == \
        (60.0, 5.0, 1, 3.0)
    assert (misc.retry, misc.delay_before_retry, misc.misc_timeout) == (0, 1.0, None)


def test_include_glob_relative_to_the_including_file():
    cfg = conf.parse(path("include_main.conf"))
    assert cfg.files == [path("include_main.conf"), path("conf.d/10-web.conf"),
                         path("conf.d/20-dns.conf")]
    web, dns = cfg.virtual_servers
    assert web.endpoints == (("10.10.10.10", 80), ("10.10.10.20", 80), ("10.10.10.21", 80),
                             ("10.10.10.22", 80))
    assert web.name == "[web]" and dns.endpoints == (("10.10.10.30", 53),)
    assert cfg.ignored == [("include 'conf.d/none-match-*.cfg': no config files matched",
                            lexer.Where(path("include_main.conf"), 4))]


def test_lexer_comments_quotes_and_braces():
    assert lexer.decomment('a "b # c" # d') == ('a "b # c"', False)
    assert lexer.decomment(r"a \# b ! c") == ("a # b", False)
    assert lexer.decomment('a "b') == ('a "b', True)
    assert lexer.words('x "a b"{y}') == ["x", "a b", "{", "y", "}"]


def test_lb_kind_tun_is_an_ipip_tunnel_to_the_service_port(tmp_path):
    f = tmp_path / "keepalived.conf"
    f.write_text(vs_text("lb_kind TUN").replace("10.1.0.1 80", "10.1.0.1 8080"))
    [rs] = conf.parse(str(f)).virtual_servers[0].real_servers
    assert (rs.fwd, rs.port) == (IP_VS_CONN_F_TUNNEL, 80)   # as -i forces it


@pytest.mark.parametrize("name, message", [
    ("bad_unknown.conf", "(bad_unknown.conf: Line 4) Unknown keyword 'wieght'"),
    ("bad_address.conf", "(bad_address.conf: Line 2) Invalid real server ip address/port "
                         "192.168.1.300/80 - skipping"),
    ("bad_brace.conf", "(bad_brace.conf: Line 1) There are 1 missing '}'s or extra '{'s"),
    ("bad_loop_a.conf", "(bad_loop_b.conf: Line 2) include loop: "
                        "'bad_loop_a.conf' is already being read"),
])
def test_bad_files_name_file_and_line(name, message):
    with pytest.raises(lexer.ConfigError) as e:
        conf.parse(path(name))
    assert str(e.value).replace(DATA + "/", "") == message


@pytest.mark.parametrize("text, message", [
    (vs_text("lb_kind FNAT"), "(keepalived.conf: Line 2) xdplb: full-NAT (FNAT, "
     "laddr_group_name, local_address_group) is not supported yet: xdplb has no full-NAT "
     "forwarding"),
    (vs_text("laddr_group_name laddr_g1"), "(keepalived.conf: Line 2) xdplb: full-NAT"),
    (vs_text("", header="fwmark 1"), "(keepalived.conf: Line 1) " + model.E_FWMARK),
    ("virtual_server_group g {\n fwmark 7\n}\n", "(keepalived.conf: Line 2) " + model.E_FWMARK),
    (vs_text("lb_algo xyz"), "(keepalived.conf: Line 2) Invalid lvs_scheduler 'xyz' - ignoring"),
    (vs_text("lb_algo twos"), "(keepalived.conf: Line 2) xdplb: scheduler 'twos' is not"),
    (vs_text("protocol SCTP"), "(keepalived.conf: Line 2) xdplb: SCTP services are not"),
    (vs_text("protocol ICMP"), "(keepalived.conf: Line 2) Unknown protocol ICMP - ignoring"),
    (vs_text("persistence_granularity 129", header="2001:db8::1 80"),
     "(keepalived.conf: Line 2) Invalid IPv6 persistence_granularity specified - 129"),
    (vs_text("delay_loop -1"), "(keepalived.conf: Line 2) virtual server delay_loop '-1' "
     "invalid - ignoring"),
    (vs_text("", "weight 70000"), "(keepalived.conf: Line 4) Real server weight 70000 is "
     "outside range 0-65535"),
    (vs_text("", "TCP_CHECK { connect_port 0 }"), "(keepalived.conf: Line 4) Invalid checker "
     "connect_port '0'"),
    (vs_text("", "HTTP_GET { }"), "(keepalived.conf: Line 4) HTTP/SSL_GET checker has no urls"),
    (vs_text("", "HTTP_GET {\nurl {\ndigest 640205b7b0fc66c1ea91c463fac6334d\n}\n}"),
     "(keepalived.conf: Line 5) HTTP/SSL_GET checker url has no path"),
    (vs_text("", "HTTP_GET {\nurl {\npath /\ndigest 12\n}\n}"), "(keepalived.conf: Line 7) "
     "digest '12' character length should be 32 rather than 2"),
    (vs_text("", "HTTP_GET {\nurl {\npath /\nstatus_code 2000\n}\n}"),
     "(keepalived.conf: Line 7) Invalid HTTP_GET status code '2000'"),
    (vs_text("", "MISC_CHECK { }"), "(keepalived.conf: Line 4) No script path has been "
     "specified for MISC_CHECKER - skipping"),
    (vs_text("", "MISC_CHECK {\nmisc_path /bin/true\nuser no-such-user-here\n}"),
     "(keepalived.conf: Line 6) Failed to set uid/gid for misc checker script"),
    (vs_text("", "UDP_CHECK {\npayload 0g\n}"), "(keepalived.conf: Line 5) Invalid hex string "
     "for UDP_CHECK payload"),
    (vs_text("", "TCP_CHECK {\nwarmup 3\n}"), "(keepalived.conf: Line 5) xdplb does not "
     "implement keepalived's 'warmup'"),
    (vs_text("", "weight 2 {\n}"), "(keepalived.conf: Line 4) Unexpected '{' - ignoring"),
    (vs_text("", "real_server 10.1.0.2 80 {\n}"), "(keepalived.conf: Line 4) Unknown keyword "
     "'real_server'"),
    (vs_text("real_server 10.1.0.2 80"), "(keepalived.conf: Line 2) Missing '{' at beginning "
     "of configuration block"),
    ("}\n", "(keepalived.conf: Line 1) Extra '}' found"),
    ("virtual_server 10.0.0.1 80 {\n{\n}\n}\n", "(keepalived.conf: Line 2) Unexpected '{' - "
     "ignoring"),
    ('virtual_server 10.0.0.1 80 {\n lb_algo "rr\n}\n', "(keepalived.conf: Line 2) "
     "Unterminated quote 'lb_algo \"rr'"),
    ("include nothing-here.conf\n", "(keepalived.conf: Line 1) Config files missing "
     "'nothing-here.conf'."),
    (vs_text("") + vs_text(""), "virtual server TCP 10.0.0.1:80 is defined twice"),
])
def test_errors(text, message, tmp_path):
    assert errors(text, tmp_path).startswith(message)


def test_every_error_is_reported(tmp_path):
    text = vs_text("lb_algo xyz\nquorum 0", "wieght 1")
    assert errors(text, tmp_path).splitlines() == [
        "(keepalived.conf: Line 2) Invalid lvs_scheduler 'xyz' - ignoring",
        "(keepalived.conf: Line 3) Quorum 0 must be in [1, 4294967295].",
        "(keepalived.conf: Line 5) Unknown keyword 'wieght'"]


def test_a_virtual_server_without_real_servers_is_ignored(tmp_path):
    f = tmp_path / "k.conf"
    f.write_text("virtual_server 10.0.0.1 80 {\n lb_algo rr\n}\n")
    cfg = conf.parse(str(f))
    assert cfg.virtual_servers == []
    assert cfg.ignored[0][0].startswith("virtual server [10.0.0.1]:80 (it has no real servers")


def test_unsafe_script_refused_with_script_security(tmp_path):
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o777)                     # writable by anyone
    f = tmp_path / "k.conf"
    body = f"MISC_CHECK {{\nmisc_path {script}\nuser root\n}}"
    f.write_text(vs_text("", body))
    [vs] = daemon.load(str(f)).virtual_servers     # without it, a warning only
    assert vs.real_servers[0].checks[0].script.argv == (str(script),)
    f.write_text("global_defs {\nenable_script_security\n}\n" + vs_text("", body))
    with pytest.raises(lexer.ConfigError) as e:
        daemon.load(str(f))
    assert str(e.value).endswith(f"Line 8) Unsafe permissions found for script '{script}' - "
                                 "disabling.")
    script.chmod(0o644)
    with pytest.raises(lexer.ConfigError) as e:
        daemon.load(str(f))
    assert str(e.value).endswith(f"Line 8) WARNING - script '{script}' is not executable for "
                                 "uid:gid 0:0 - disabling.")


def test_a_bad_file_changes_nothing(tmp_path, monkeypatch):
    """daemon.run refuses a bad file before it opens (or creates) any state."""
    def no_state(*a, **kw):
        raise AssertionError("the state was opened")
    monkeypatch.setattr(daemon.Control, "open", no_state)
    with pytest.raises(lexer.ConfigError):
        daemon.run(1.0, path("bad_unknown.conf"))
