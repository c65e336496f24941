"""`xdplb bench`: is xdplb faster than IPVS and iptables? (issue 4)

    pkt     ns/packet of the data path with BPF_PROG_TEST_RUN (pkt.py, curves.py)
    fwd     forwarding rate through a real balancer hop, live-frame generator (fwd.py)
    ctl     control plane: xdplbadm -R against iptables-restore / ipvsadm -R (ctl.py)
    mem     kernel bytes per connection and per service (mem.py)

cli.py runs them, report.py writes results.md, results.json and the plots.
"""
from .cli import bench_command, run  # noqa: F401
