"""model's checks of -A/-E and -a/-e: which refusal, in which order, with the
text xdplbadm prints (ipvs_strerror's for what the kernel refuses, xdplb's own
for what the data path cannot do)."""
import pytest

from xdplb import model
from xdplb.model import (AF_INET6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Destination,
                         Service, XdplbError)
from xdplb.structs import (IP_VS_CONN_F_DROUTE, IP_VS_CONN_F_LOCALNODE, IP_VS_CONN_F_MASQ,
                           IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_TUNNEL_TYPE_GRE,
                           IP_VS_CONN_F_TUNNEL_TYPE_GUE, IP_VS_SVC_F_ONEPACKET,
                           IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM)

NOT_YET = ("not supported yet (xdplb supports TCP and UDP services, IPv4 and IPv6, with every "
           "ipvsadm scheduler and -m (masquerading), -g (direct routing) or -i (tunnelling: "
           "ipip, gue; either family under either) servers)")


def refusal(check, obj):
    with pytest.raises(XdplbError) as e:
        check(obj)
    return e.value.message, e.value.code


def svc(**kw):
    return Service(**{"proto": IPPROTO_TCP, "addr": "10.0.0.1", "port": 80, "sched": "rr", **kw})


def dest(**kw):
    return Destination(**{"addr": "10.1.0.1", "port": 80, **kw})


def test_every_scheduler_but_twos_runs():
    for name in model.IPVS_SCHEDULERS:
        if name != "twos":
            model.check_service(svc(sched=name))
    assert refusal(model.check_service, svc(sched="twos")) == (
        f"xdplb: scheduler 'twos' is not supported yet ({model.SUPPORTED})", 255)
    assert refusal(model.check_service, svc(sched="foo")) == (
        "Scheduler or persistence engine not found", 255)


@pytest.mark.parametrize("kw,message", [
    (dict(pe="foo"), "Scheduler or persistence engine not found"),
    (dict(pe="sip"), "xdplb: persistence engines (--pe) are " + NOT_YET),
    (dict(addr="2001:db8::1", netmask=0), model.E_EINVAL),
    (dict(addr="2001:db8::1", netmask=129), model.E_EINVAL),
    (dict(proto=IPPROTO_SCTP), "xdplb: SCTP services are " + NOT_YET),
    (dict(proto=1), "xdplb: protocol 1 is " + NOT_YET),
    (dict(proto=IPPROTO_UDP, flags=IP_VS_SVC_F_ONEPACKET),
     "xdplb: one-packet scheduling (-o) is " + NOT_YET),
    (dict(netmask="255.255.255.x"),
     "Invalid operation.  Possibly wrong module version, address not unicast, ..."),
])
def test_service_refusals(kw, message):
    assert refusal(model.check_service, svc(**kw)) == (message, 255)


def test_firewall_marks_are_refused_with_the_reason():
    message, code = refusal(model.check_service, svc(fwmark=1, addr="0.0.0.0", port=0))
    assert code == 255 and message == model.E_FWMARK
    assert message.startswith("xdplb: firewall-mark services (-f) cannot work with xdplb: ")


def test_service_checks_come_in_the_kernels_order():
    """The scheduler is looked up first, then the persistence engine, then
    what kind of service it is."""
    assert refusal(model.check_service, svc(sched="foo", fwmark=1))[0] == model.E_NO_SCHED
    assert refusal(model.check_service, svc(pe="foo", af=AF_INET6))[0] == model.E_NO_SCHED
    assert refusal(model.check_service, svc(pe="sip", proto=IPPROTO_SCTP))[0] == \
        "xdplb: SCTP services are " + NOT_YET


@pytest.mark.parametrize("kw,message", [
    (dict(weight=-1), "Numerical result out of range"),
    (dict(u_threshold=5, l_threshold=6), "Numerical result out of range"),
    (dict(addr="ff02::1"), model.E_EINVAL),
    (dict(addr="fe80::1"), model.E_EINVAL),
    (dict(addr="febf::1"), model.E_EINVAL),
    (dict(addr="::ffff:10.1.0.1"), model.E_EINVAL),
    (dict(addr="::"), model.E_EINVAL),
    (dict(addr="0.1.2.3"), model.E_EINVAL),
    (dict(addr="224.0.0.1"), model.E_EINVAL),
    (dict(addr="239.255.255.255"), model.E_EINVAL),
    (dict(addr="255.255.255.255"), model.E_EINVAL),
    (dict(fwd=IP_VS_CONN_F_TUNNEL, tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GRE),
     "xdplb: GRE tunnels (--tun-type gre) are " + NOT_YET),
    (dict(fwd=IP_VS_CONN_F_LOCALNODE), "xdplb: this forwarding method is " + NOT_YET),
])
def test_server_refusals(kw, message):
    """(Each of a service of its own family.)"""
    assert refusal(lambda d: model.check_dest(d, d.af), dest(**kw)) == (message, 255)


def test_ipv6_services_and_their_addresses():
    """IPv6 TCP and UDP services are taken, their netmask a prefix length
    (128 unless given); a service's address is not checked, as the kernel
    does not check it."""
    for kw in (dict(addr="2001:db8::1"), dict(addr="2001:db8::1", proto=IPPROTO_UDP),
               dict(addr="fe80::1"), dict(addr="::ffff:1.2.3.4"),
               dict(addr="fd00::1", netmask=64), dict(addr="fd00::1", netmask=1)):
        model.check_service(svc(**kw))
    assert (svc(addr="2001:db8::1").af, svc(addr="2001:db8::1").netmask) == (AF_INET6, 128)
    assert (svc().af, svc().netmask) == (model.AF_INET, "255.255.255.255")


def test_ipv6_servers_taken():
    """Unicast IPv6 real servers, -m and -g; loopback, site-local and
    v4-compatible addresses are unicast to the kernel too."""
    for kw in (dict(fwd=IP_VS_CONN_F_MASQ), dict(fwd=IP_VS_CONN_F_DROUTE)):
        for addr in ("2001:db8::2", "fd00:80::5", "::1", "fec0::1", "fe00::1", "::10.1.0.1"):
            model.check_dest(dest(addr=addr, **kw), AF_INET6)
    assert dest(addr="2001:db8::2").af == AF_INET6


def test_other_family_servers():
    """Another family than the service's: ipvsadm's own refusal (exit 2)
    unless it tunnels; tunnels of either family under either are taken,
    gre still refused, non-unicast servers refused in their own family."""
    family = ("Different address family is allowed only for tunneling servers", 2)
    for svc_af, addr in ((model.AF_INET, "2001:db8::2"), (AF_INET6, "10.1.0.1")):
        for fwd in (IP_VS_CONN_F_MASQ, IP_VS_CONN_F_DROUTE):
            assert refusal(lambda d: model.check_dest(d, svc_af), dest(addr=addr, fwd=fwd)) \
                == family
        model.check_dest(dest(addr=addr, fwd=IP_VS_CONN_F_TUNNEL), svc_af)
        model.check_dest(dest(addr=addr, fwd=IP_VS_CONN_F_TUNNEL,
                              tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GUE, tun_port=6080), svc_af)
        assert refusal(lambda d: model.check_dest(d, svc_af),
                       dest(addr=addr, fwd=IP_VS_CONN_F_TUNNEL,
                            tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GRE)) == (
            "xdplb: GRE tunnels (--tun-type gre) are " + NOT_YET, 255)
    model.check_dest(dest(addr="2001:db8::2", fwd=IP_VS_CONN_F_TUNNEL), AF_INET6)
    for svc_af, addr in ((model.AF_INET, "fe80::2"), (AF_INET6, "224.0.0.1")):
        assert refusal(lambda d: model.check_dest(d, svc_af),
                       dest(addr=addr, fwd=IP_VS_CONN_F_TUNNEL)) == (model.E_EINVAL, 255)
    # the family comes first, as ipvsadm refuses before the kernel sees it
    assert refusal(lambda d: model.check_dest(d, AF_INET6), dest(weight=-1)) == family


def test_servers_taken():
    for kw in (dict(fwd=IP_VS_CONN_F_MASQ), dict(fwd=IP_VS_CONN_F_DROUTE),
               dict(fwd=IP_VS_CONN_F_TUNNEL),
               dict(fwd=IP_VS_CONN_F_TUNNEL, tun_type=IP_VS_CONN_F_TUNNEL_TYPE_GUE, tun_port=6080,
                    tun_flags=IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM),
               dict(weight=0), dict(weight=2147483647), dict(u_threshold=6, l_threshold=6),
               dict(addr="223.255.255.255"), dict(addr="240.0.0.1"), dict(addr="1.0.0.0")):
        model.check_dest(dest(**kw))


def test_range_comes_before_the_address():
    assert refusal(model.check_dest, dest(weight=-1, addr="224.0.0.1"))[0] == model.E_ERANGE
    assert refusal(model.check_dest, dest(addr="224.0.0.1", fwd=IP_VS_CONN_F_TUNNEL))[0] == \
        model.E_EINVAL
