"""The rate estimator (xdplb/estimator.py): the kernel's fixed-point EWMA
against values worked out by hand from ip_vs_est.c's formulas, its file,
and what the daemon's periods and configuration changes do to estimates and
totals, on the fake maps (the clock is given: no test waits)."""
import pytest

from xdplb import estimator
from xdplb.control import Control
from xdplb.estimator import DEST, PERIOD_NS, SVC, estimate, shown
from xdplb.model import IPPROTO_TCP, Destination, Service, Stats
from xdplb.structs import IpVsStats

ZERO = (0,) * 5


def steps(per_period, n, avg=ZERO):
    """The averages after each of n periods with the same traffic each."""
    out, last, now = [], ZERO, ZERO
    for _ in range(n):
        now = tuple(c + d for c, d in zip(now, per_period))
        avg = estimate(avg, last, now)
        last = now
        out.append(avg)
    return out


def test_packets_by_hand():
    # 100 packets per 2 s: sample = 100 << 9 = 51200 (50/s scaled by 2^10)
    # avg1 = 0 + (51200 - 0) >> 2 = 12800        shown (12800 + 511) >> 10 = 12 (12.5)
    # avg2 = 12800 + (38400 >> 2) = 22400        shown (22400 + 511) >> 10 = 22 (21.875)
    # avg3 = 22400 + (28800 >> 2) = 29600        shown (29600 + 511) >> 10 = 29 (28.9)
    # avg4 = 29600 + (21600 >> 2) = 35000        shown (35000 + 511) >> 10 = 34 (34.18)
    avgs = [a[1] for a in steps((0, 100, 0, 0, 0), 4)]
    assert avgs == [12800, 22400, 29600, 35000]
    assert [shown((0, a, 0, 0, 0)).inpkts for a in avgs] == [12, 22, 29, 34]


def test_half_rounds_down_as_the_kernel_adds_0x1ff():
    # 512/1024 is exactly a half: + 0x1FF does not carry it into the next unit
    assert shown((512, 512, 1536, 0, 0))[:3] == (0, 0, 1)
    assert shown((513, 0, 0, 0, 0)).conns == 1
    # bytes are scaled by 2^5 and add 0xF: 16/32 stays 0, 17/32 becomes 1
    assert shown((0, 0, 0, 16, 17))[3:] == (0, 1)


def test_bytes_by_hand():
    # 3000 bytes per 2 s: sample = 3000 << 4 = 48000 (1500 B/s scaled by 2^5)
    # avg1 = 12000: shown (12000 + 15) >> 5 = 375; avg2 = 12000 + 9000 = 21000: 656
    avgs = steps((0, 0, 0, 3000, 3000), 2)
    assert [a[3] for a in avgs] == [12000, 21000]
    assert [shown(a).inbytes for a in avgs] == [375, 656]
    assert [shown(a).outbytes for a in avgs] == [375, 656]


def test_falling_rate_shifts_arithmetically():
    # from a steady 51200 with no traffic: avg += (0 - 51200) >> 2 = -12800
    assert estimate((51200,) + ZERO[1:], (7,) * 5, (7,) * 5)[0] == 38400
    # -1 >> 2 is -1 in C's arithmetic shift (not 0): a last unit decays to 0
    assert estimate((1,) * 5, (7,) * 5, (7,) * 5) == ZERO


def test_steady_traffic_converges_to_the_rate():
    # 100 conns, 1000 packets and 150000 bytes per 2 s: 50/s, 500/s, 75000 B/s
    avgs = steps((100, 1000, 1000, 150000, 150000), 60)
    assert shown(avgs[-1]) == Stats(50, 500, 500, 75000, 75000)
    # the estimator's error after n periods is (3/4)^n of the rate, plus a unit
    for n, avg in enumerate(avgs, 1):
        got = shown(avg).inpkts
        assert abs(got - 500) <= 500 * 0.75 ** n + 1, (n, got)


def test_counters_wrap_as_u64():
    last = ((1 << 64) - 10,) * 5
    now = (90,) * 5          # wrapped: 100 more
    assert estimate(ZERO, last, now) == (12800, 12800, 12800, 400, 400)


# --- the daemon's periods and configuration changes, on the fake maps --------------------

def count(st, name, slot, stats):
    """Set a stats slot's counters (CPU 0 holds them, the others 0)."""
    m = getattr(st, name)
    m.put(slot, [IpVsStats(*stats)] + [IpVsStats()] * (m.ncpus - 1))


@pytest.fixture
def ctl(fake_state):
    c = Control(fake_state)
    c.add_service(Service(IPPROTO_TCP, "10.0.0.1", 80, sched="rr"))
    c.add_service(Service(IPPROTO_TCP, "10.0.0.2", 80, sched="rr"))
    c.add_dest((IPPROTO_TCP, "10.0.0.1", 80), Destination("10.1.0.1", 80, 0, 1))
    return c


def slots(ctl):
    return {s.addr: (s.slot, s.seq, [(d.slot, d.seq) for d in s.dests])
            for s in ctl.services()}


def test_daemon_periods_and_listing(ctl):
    st = ctl.st
    (s1, q1, [(d1, dq1)]), _ = slots(ctl)["10.0.0.1"], None
    t = 10 * PERIOD_NS
    count(st, "svc_stats", s1, (4, 40, 20, 4000, 2000))
    count(st, "dest_stats", d1, (4, 40, 20, 4000, 2000))
    estimator.tick(st, t)     # a daemon's first period: starts from the counters
    est = estimator.load(st)
    assert est.ticks == 1 and est.records[(SVC, s1)] == (q1, (4, 40, 20, 4000, 2000), ZERO)
    count(st, "svc_stats", s1, (104, 1040, 520, 104000, 52000))
    count(st, "dest_stats", d1, (104, 1040, 520, 104000, 52000))
    estimator.tick(st, t + PERIOD_NS)
    est = estimator.load(st)
    want = Stats(12, 125, 62, 12500, 6250)    # a quarter of 50/s, 500/s, 250/s, ...
    assert est.rate(SVC, s1, q1) == est.rate(DEST, d1, dq1) == want
    assert est.rate(SVC, s1, q1 + 1) == Stats()   # another service in that slot
    # a listing reads the estimates while they are fresh (the daemon runs) ...
    assert est.fresh(t + PERIOD_NS + estimator.STALE_NS)
    assert not est.fresh(t + PERIOD_NS + estimator.STALE_NS + 1)


def test_zero_resets_estimates_and_totals(ctl):
    st = ctl.st
    s1, q1, [(d1, _)] = slots(ctl)["10.0.0.1"]
    s2, q2, _ = slots(ctl)["10.0.0.2"]
    count(st, "svc_stats", s1, (1, 2, 3, 4, 5))
    count(st, "svc_stats", s2, (10, 20, 30, 40, 50))
    estimator.tick(st, PERIOD_NS)
    count(st, "svc_stats", s1, (101, 1002, 503, 100004, 50005))
    estimator.tick(st, 2 * PERIOD_NS)
    assert estimator.load(st).rate(SVC, s1, q1) != Stats()
    # -Z of one service: its estimates read 0, its counts join the totals
    ctl.zero((IPPROTO_TCP, "10.0.0.1", 80))
    est = estimator.load(st)
    assert (SVC, s1) not in est.records and (DEST, d1) not in est.records
    assert (SVC, s2) in est.records
    assert est.rate(SVC, s1, q1) == Stats()
    assert est.retired == Stats(101, 1002, 503, 100004, 50005)
    # the next period starts it again from the zeroed counters (last = 0)
    count(st, "svc_stats", s1, (2, 20, 0, 0, 0))
    estimator.tick(st, 3 * PERIOD_NS)
    est = estimator.load(st)
    assert est.records[(SVC, s1)] == (q1, (2, 20, 0, 0, 0), (256, 2560, 0, 0, 0))
    # deleting a service keeps what it counted in the totals
    ctl.delete_service(IPPROTO_TCP, "10.0.0.2", 80)
    assert estimator.load(st).retired == Stats(111, 1022, 533, 100044, 50055)
    # -Z of everything zeroes the totals too (ip_vs_zero_all)
    ctl.zero()
    est = estimator.load(st)
    assert est.retired == Stats() and not est.records


def test_a_change_the_file_missed_is_caught_by_the_next_period(ctl):
    """A -Z or delete killed between its commit and its record: the daemon
    adds what it last saw of the service to the totals and restarts it."""
    st = ctl.st
    s1, q1, _ = slots(ctl)["10.0.0.1"]
    s2, q2, _ = slots(ctl)["10.0.0.2"]
    count(st, "svc_stats", s1, (5, 50, 50, 500, 500))
    count(st, "svc_stats", s2, (7, 70, 70, 700, 700))
    estimator.tick(st, PERIOD_NS)
    count(st, "svc_stats", s1, (1, 1, 1, 1, 1))        # zeroed, then a packet
    st.services.delete(next(k for k, e in st.services.items() if e.slot == s2))
    estimator.tick(st, 2 * PERIOD_NS)
    est = estimator.load(st)
    assert est.retired == Stats(12, 120, 120, 1200, 1200)
    assert est.records[(SVC, s1)] == (q1, (1, 1, 1, 1, 1), ZERO)
    assert (SVC, s2) not in est.records


def test_a_stale_file_is_not_resumed(ctl):
    """A daemon started after another stopped: every estimator starts from the
    counters now (no burst of everything counted meanwhile)."""
    st = ctl.st
    s1, q1, _ = slots(ctl)["10.0.0.1"]
    estimator.tick(st, PERIOD_NS)
    count(st, "svc_stats", s1, (1000, 1000, 1000, 1000, 1000))
    estimator.tick(st, PERIOD_NS + estimator.STALE_NS + 1)
    assert estimator.load(st).rate(SVC, s1, q1) == Stats()


def test_the_file_names_its_state(ctl, fake_state):
    st = ctl.st
    estimator.tick(st, PERIOD_NS)
    data = open(estimator.path(st), "rb").read()
    assert estimator.decode(st, data).ticks == 1
    assert estimator.decode(st, data[:-1]) is None
    assert estimator.decode(st, data[:-1] + bytes([data[-1] ^ 1])) is None
    other = type(fake_state)(fake_state.folder)   # a recreated state: new map ids
    assert estimator.decode(other, data) is None
    assert estimator.load(other).ticks == 0


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_daemons_keep_one_schedule(ctl):
    """A restarted daemon keeps the file's schedule, and two daemons of one
    state run one period between them."""
    st = ctl.st
    clock = Clock(100 * PERIOD_NS)
    a = estimator.Daemon(st, clock)
    assert a.run() == 2.0 and estimator.load(st).ticks == 1
    clock.t += PERIOD_NS // 4
    b = estimator.Daemon(st, clock)          # started half a second after a's period
    assert b.run() == 1.5 and estimator.load(st).ticks == 1
    clock.t += 3 * PERIOD_NS // 4             # the next period is due for both
    assert a.run() == 2.0 and b.run() == 2.0
    assert estimator.load(st).ticks == 2
    clock.t += 3 * PERIOD_NS                  # late: one period, not two
    assert a.run() == 2.0 and estimator.load(st).ticks == 3
    clock.t += PERIOD_NS // 2                 # a restarted daemon waits for the schedule
    c = estimator.Daemon(st, clock)
    assert c.run() == 1.0 and estimator.load(st).ticks == 3
