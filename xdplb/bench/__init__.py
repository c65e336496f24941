"""`xdplb bench`: is xdplb faster than IPVS and iptables? (issues 4 and 11)

    pkt     ns/packet of the data path with BPF_PROG_TEST_RUN beside the reference
            programs (pkt.py, newconn.py, scheds.py, curves.py)
    fwd     forwarding rate through a real balancer hop, live-frame generator (fwd.py)
    cps     TCP connections per second and latency (cps.py)
    ctl     control plane: xdplbadm -R against iptables-restore / ipvsadm -R (ctl.py)
    mem     kernel bytes per connection and per service (mem.py)
    scale   the per-packet rows on one CPU and on every CPU at once (scale.py)
    ops     the building blocks of a new connection and of an established packet,
            and program sizes (ops.py)
    checks  (only when named) health checks of `xdplb daemon -f` per second per
            core, 1,000 real servers (checks.py)

cli.py runs them; targets.py evaluates issue 11's targets; report.py writes
results.md and results.json, plots.py the plots.
"""
from .cli import bench_command, run  # noqa: F401
