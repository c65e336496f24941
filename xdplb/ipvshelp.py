"""xdplbadm's -h and -v texts: ipvsadm 1.31's commands and options as xdplb
runs them, then xdplb's own (full-NAT, hairpin and DPVS's local-address
commands). Keep in step with xdplb/ipvsopts.py's TABLE and README's
"What each command does"."""
from . import ipvsfmt as F

VERSION = "0.1.0"
VERSION_DATE = "2026/11/21"

USAGE = """\
Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe engine] [-b flags]
        [--hairpin]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [-g|-m|-i|--fullnat] [-w weight]
  {p} -d virtual-service -r server-address
  {p} -P virtual-service -z local-address [-F ifname]
  {p} -Q virtual-service -z local-address
  {p} -G [virtual-service]
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} --start-daemon {{master|backup}} [daemon-options]
  {p} --stop-daemon {{master|backup}}
  {p} -h

xdplbadm drives xdplb, an IPVS-style load balancer whose data path runs in
XDP, with the command line of ipvsadm: same options, output and exit codes.
Its tables live in pinned BPF maps of the current network namespace.

Commands (long or short form):
  --add-service     -A        add a virtual service
  --edit-service    -E        replace the settings of a virtual service
  --delete-service  -D        delete a virtual service and its real servers
  --clear           -C        delete every virtual service
  --restore         -R        run the commands read from standard input
  --save            -S        print the table as commands for -R
  --add-server      -a        add a real server to a virtual service
  --edit-server     -e        replace the settings of a real server
  --delete-server   -d        remove a real server
  --list            -L|-l     list the table (the default without arguments)
  --zero            -Z        zero the counters of one or every service
  --set tcp tcpfin udp        set connection timeouts (0 leaves one unchanged)
  --start-daemon / --stop-daemon   connection sync daemon (not supported yet)
  --help            -h        show this text
  --version         -v        show the version

Options:
  --tcp-service  -t host[:port]   a TCP virtual service
  --udp-service  -u host[:port]   a UDP virtual service
  --scheduler    -s scheduler     rr wrr lc wlc (default) sed nq fo ovf sh dh mh lblc lblcr
  --persistent   -p [timeout]     persistent service (default 360 s)
  --netmask      -M netmask       persistence granularity (client address mask)
  --sched-flags  -b flags         sh-fallback, sh-port, mh-fallback, mh-port
  --u-threshold  -x uthreshold    stop new connections at this many connections
  --l-threshold  -y lthreshold    take them again below this many
  --real-server  -r host[:port]   a real server (its port defaults to the service port)
  --gatewaying   -g               direct routing (default; the port is the service port)
  --masquerading -m               NAT
  --ipip         -i               tunnelling (the port is the service port)
  --tun-type     type             ipip (default) or gue
  --tun-port     port             gue: the real server's UDP port
  --tun-nocsum / --tun-csum / --tun-remcsum   gue: outer UDP checksum off (default) / on /
                                  on (remcsum: as IPVS forwards it, = --tun-csum)
  --weight       -w weight        0..2147483647, default 1; 0 takes no new connections
  --numeric      -n               do not resolve addresses and ports to names
  --connection   -c               list the connection table
  --timeout                       list the timeouts (tcp tcpfin udp)
  --daemon                        list the sync daemons
  --stats                         list counters
  --rate                          list rates (xdplb daemon's estimates, or 1 s of counters)
  --exact                         print exact numbers with --stats / --rate
  --thresholds                    list thresholds
  --persistent-conn               list persistent connections
  --nosort                        list in creation order
  --sctp-service, -6, -o, --pe, --tun-type gre and the daemon options are parsed as
  ipvsadm does and then refused: not supported yet. -f (firewall marks) is refused:
  XDP sees packets before they carry a mark.

xdplb's own (not ipvsadm's; the local-address commands and their letters are DPVS's):
  --add-laddr    -P               add a local address to a service (full-NAT's sources)
  --del-laddr    -Q               remove a local address from a service
  --get-laddr    -G               list the local addresses of one or every service
  --laddr        -z address       the local address: on this host, the service's family
  --ifname       -F ifname        the interface it belongs to (-P; kept, listed, saved)
  --fullnat                       full-NAT: the source becomes a local address and port
                                  (long form only: -b is --sched-flags)
  --hairpin                       -A/-E: a client on the real servers' side (or a real
                                  server calling its own service) is source-NATed too
"""


def version_text():
    return f"xdplbadm v{VERSION} {VERSION_DATE} (compiled with popt and IPVS v{F.IPVS_VERSION})\n"
