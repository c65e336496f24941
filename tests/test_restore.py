"""xdplbadm -R as one transaction: the same maps as the lines one by one,
nothing changed on a command-line error, kernel-style refusals continue."""
import pytest

from test_adm import TRY, adm, ok, pin, snapshot  # noqa: F401  (pin is a fixture)
from xdplb.control import Control
from xdplb.structs import Alloc, SchedPos
from xdplb.tables import Tables

INPUTS = [
    # new services of every schedule kind, DR and Masq, ports and weights
    "-A -t 10.9.0.1:80 -s rr\n"
    "-a -t 10.9.0.1:80 -r 10.9.1.1 -m -w 3\n"
    "-a -t 10.9.0.1:80 -r 10.9.1.2:8080 -m\n"
    "-a -t 10.9.0.1:80 -r 10.9.1.3 -g -w 2\n"
    "-A -u 10.9.0.2:53 -s wrr\n"
    "-a -u 10.9.0.2:53 -r 10.9.2.1 -m -w 4\n"
    "-a -u 10.9.0.2:53 -r 10.9.2.2 -m -w 2\n"
    "-a -u 10.9.0.2:53 -r 10.9.2.3 -m -w 0\n"
    "-A -t 10.9.0.3:443 -s sh\n-a -t 10.9.0.3:443 -r 10.9.3.1 -m -w 2\n"
    "-a -t 10.9.0.3:443 -r 10.9.3.2 -m\n"
    "-A -t 10.9.0.4:443 -s mh -b mh-port\n-a -t 10.9.0.4:443 -r 10.9.4.1 -m -w 5\n"
    "-a -t 10.9.0.4:443 -r 10.9.4.2 -m -w 0\n-a -t 10.9.0.4:443 -r 10.9.4.3 -m\n"
    "-A -t 10.9.0.5:80 -s dh\n-a -t 10.9.0.5:80 -r 10.9.5.1 -m\n"
    "-A -t 10.9.0.6:80 -s wlc -p 60\n-a -t 10.9.0.6:80 -r 10.9.6.1 -m -x 10 -y 5\n"
    "-A -t 10.9.0.7:80\n",
    # more destinations for the services that already exist (with traffic
    # positions), interleaved with new ones, and refusals in the middle
    "-a -t 10.0.0.1:80 -r 10.1.0.9 -m -w 2\n"
    "-A -t 10.9.0.8:80 -s wrr\n"
    "-a -u 10.0.0.1:53 -r 10.2.0.7 -m\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.1 -m\n"          # Destination already exists
    "-a -t 10.9.0.8:80 -r 10.9.8.1 -m -w 2\n"
    "-a -t 10.9.9.9:80 -r 10.9.8.1 -m\n"          # Service not defined
    "-a -u 10.0.0.1:53 -r 10.2.0.8 -m -w 0\n"
    "-A -t 10.0.0.1:80\n"                         # Service already exists
    "-a -t 10.9.0.8:80 -r 10.9.8.2 -m -w 3\n"
    "-a -t 10.0.0.1:80 -r 10.1.0.10 -g -w 1\n",
    # every kind of change: slots freed and taken again by a later line, a
    # live service switched an even number of times (back to the ring
    # generation it started in), a list with its middle destination removed
    "-a -t 10.0.0.1:80 -r 10.1.0.9 -m -w 2\n"
    "-e -t 10.0.0.1:80 -r 10.1.0.1 -m -w 1\n"
    "-d -u 10.0.0.1:53 -r 10.2.0.1\n"
    "-a -u 10.0.0.1:53 -r 10.2.0.5 -m\n"
    "-A -t 10.9.0.1:80 -s mh\n-a -t 10.9.0.1:80 -r 10.9.1.1 -m\n"
    "-a -t 10.9.0.1:80 -r 10.9.1.2 -m -w 3\n-a -t 10.9.0.1:80 -r 10.9.1.3 -m\n"
    "-d -t 10.9.0.1:80 -r 10.9.1.2\n"
    "-D -t 10.0.0.1:80\n"
    "-A -t 10.9.0.2:80 -s rr\n"
    "-a -t 10.9.0.2:80 -r 10.9.2.1 -m\n-a -t 10.9.0.2:80 -r 10.9.2.2 -m -w 3\n"
    "-E -t 10.9.0.1:80 -s sh -b sh-port\n"
    "-e -t 10.9.0.1:80 -r 10.9.1.1 -m -w 0\n"
    "-E -u 10.0.0.1:53 -s wlc -p 30\n"
    "-Z -t 10.9.0.2:80\n-Z\n"
    "--set 100 20 30\n"
    "-d -t 10.9.0.9:80 -r 10.9.1.1\n"            # Service not defined
    "-e -t 10.9.0.2:80 -r 10.9.9.9 -m\n"         # No such destination
    "-E -t 10.0.0.1:80 -s rr\n"                  # No such service (deleted above)
    "-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 10.1.0.1 -m -w 4\n",
    # a flush in the middle: everything after it takes the freed slots
    "-a -t 10.0.0.1:80 -r 10.1.0.9 -m\n-C\n-A -t 10.9.0.1:80 -s wrr\n"
    "-a -t 10.9.0.1:80 -r 10.9.1.1 -m -w 2\n-a -t 10.9.0.1:80 -r 10.9.1.2 -m\n"
    "-D -t 10.9.0.1:80\n-A -u 10.9.0.1:53 -s rr\n-a -u 10.9.0.1:53 -r 10.9.1.3 -m\n"
    "-C\n-C\n-A -t 10.9.0.3:80 -s lc\n",
]


def _with_traffic():
    """Move the live ring positions of the base services (as traffic would)."""
    with Control.open() as ctl:
        for c in Tables(ctl.st).services().values():
            ctl.st.sched_pos.put(c.slot, SchedPos(c.ring_base + 5))


def _base():
    """The same starting tables every time (seqs are never reused, even after
    -C: the last one handed out is forgotten here so both runs count alike)."""
    ok("-C")
    with Control.open() as ctl:
        ctl.st.alloc.put(0, Alloc())
    ok("-R", stdin="-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 10.1.0.1 -m -w 3\n"
       "-a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m\n-A -u 10.0.0.1:53 -s rr\n"
       "-a -u 10.0.0.1:53 -r 10.2.0.1 -m\n-a -u 10.0.0.1:53 -r 10.2.0.2 -m\n")
    _with_traffic()


def _one_by_one(text):
    errs = ""
    rc = 0
    for line in text.splitlines():
        rc, _, err = adm(*line.split())
        errs += err
    return rc, errs


@pytest.mark.parametrize("text", INPUTS)
def test_restore_equals_line_by_line(pin, text):
    _base()
    rc1, err1 = _one_by_one(text)
    one = snapshot()
    _base()
    rc2, _, err2 = adm("-R", stdin=text)
    assert snapshot() == one
    assert (rc2, err2) == (rc1, err1)
    ok("-C")


def test_bad_line_in_the_middle_changes_nothing(pin):
    _base()
    before = snapshot()
    text = ("-A -t 10.9.0.1:80 -s rr\n-a -t 10.9.0.1:80 -r 10.9.1.1 -m\n"
            "-a -t 10.0.0.1:80 -r 10.1.0.9 -m\n"
            "-a -t 10.9.0.1:80 -r 10.9.1.2 -m -w 2147483648\n"
            "-A -t 10.9.0.2:80 -s rr\n")
    assert adm("-R", stdin=text) == (2, "", "illegal weight specified\n")
    assert snapshot() == before
    assert adm("-R", stdin="-A -t 10.9.0.1:80\n# x\n") == (255, "", TRY)
    assert snapshot() == before
    ok("-C")


def test_refusal_in_the_middle_continues(pin):
    _base()
    text = ("-A -t 10.9.0.1:80 -s rr\n-A -t 10.9.0.1:80 -s rr\n"
            "-a -t 10.9.0.1:80 -r 10.9.1.1 -m\n-a -t 10.9.0.1:80 -r 10.9.1.1 -m\n"
            "-a -t 10.9.0.1:80 -r 10.9.1.2 -m\n")
    assert adm("-R", stdin=text) == (
        0, "", "Service already exists\nDestination already exists\n")
    assert ok("-S", "-n").count("10.9.0.1:80") == 3
    rc, _, err = adm("-R", stdin="-a -t 10.9.0.1:80 -r 10.9.1.3 -m\n-A -t 10.9.0.1:80\n")
    assert (rc, err) == (255, "Service already exists\n")
    assert "10.9.1.3:80" in ok("-S", "-n")
    ok("-C")
