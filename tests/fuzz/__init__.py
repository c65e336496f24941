"""Packet fuzzing of the XDP data path through BPF_PROG_TEST_RUN (issue 6).

    python -m tests.fuzz --frames 1000000 [--seed N] [--batch N]   (from the checkout)

runs the real program (bpf/xdplb.c, compiled and pinned in a private folder)
in a private network namespace with permanent neighbours, with Masq, Route,
Tunnel, full-NAT, drop-only, port-zero and dest-gone services, one masquerading real
server behind three services, and tracked NAT and DR flows configured
(rs_table and rs_filter written by the control plane's rs_join), all of
them (Tunnel's aside: IPv4 only) over IPv6 too (services6, rs_table6,
conns6), and feeds it random and mutated frames of both families: valid
ones and ones truncated at every offset, with bad IHL / total / payload /
UDP lengths / data offsets, IP options, IPv6 extension-header chains (those
the data path walks, more than four of them, and a fragment header, ESP,
AH or unknown ones among them), fragments (IPv4 datagrams of services and
tracked flows cut up, their later fragments reordered, duplicated, moved
into the L4 header, truncated, with their first fragment late or lost, and
ids reused), VLAN stacks, ICMP and ICMPv6 errors quoting tracked flows,
untracked ones or garbage, the real servers' replies and replies naming
another real server, port or client, real servers as clients, and random
bytes.

An oracle written from the specification (README "How it works"), not from
the C code, decides for every frame what must happen:

- never XDP_ABORTED;
- a frame that is not ours (not a well-formed IPv4 TCP/UDP frame or first
  fragment, or IPv6 TCP/UDP packet after at most four hop-by-hop, routing
  and destination-options headers, with at most one VLAN tag; or neither a
  tracked flow nor a SYN / UDP datagram to a virtual service) leaves with
  XDP_PASS, byte-identical, and creates no connection entry;
- a later fragment follows its first fragment's record (fragments.py):
  same IP-header rewrite, same way out; without one it is passed
  byte-identical, starting inside the L4 header it is dropped;
- a frame of ours leaves TX / REDIRECT (rewritten: MACs of the egress, plus
  Masq's address and port), PASS (NATed for the stack when the neighbour is
  unknown, or untouched when there is no route) or DROP (untouched, only for
  a service without an available destination or a flow whose destination is
  gone); only the fields NAT / DR may change differ, and the IP (IPv4) and
  TCP/UDP checksums, verified from scratch with an independent
  one's-complement sum, are valid whenever they were valid on input (an
  input error is carried, never laundered; a zero UDP checksum stays zero
  and a non-zero one never becomes zero);
- new connections get exactly the ring's next destination; a real server's
  reply belongs to the connection (one entry, keyed by the client's tuple)
  that rs_table leads to: the services listed for its address and port
  (newest first), then for port 0, until one names a Masq connection to
  exactly that address and port; nothing else is a reply; a full-NAT
  connection is lent a local address of its service and a port no other
  connection has (fullnat.py), and only a packet to that tuple from its
  real server is its reply (fnat_out must hold exactly the tuples lent);
- ICMP and ICMPv6 errors about a tracked connection are translated
  (tests/fuzz/icmp.py: every checksum, the quoted IPv4 header's included,
  recomputed from scratch), a forward over the MTU is answered (fragmentation
  needed with DF, packet too big over IPv6) or goes to the stack, a new
  connection without a destination is answered with port unreachable (or
  dropped, rate-limited), every answer byte for byte;
- the oracle's model of the connection table equals the kernel's map after
  every batch, an entry caching its replies' egress exactly when a reply
  was forwarded; the program's own counters agree with the verdicts.

The short run is tests/test_fuzz.py (make test); the long one `make fuzz`.

wire.py     frames as bytes: the network's addresses of both families, checksums,
            the parser, builders
frames.py   the frame generator
frames6.py  IPv6's shapes for it: extension-header chains, IPv6's field mutations
oracle.py   the model and the rules above
fragments.py the model of fragment records and the rules for later fragments
icmp.py     the ICMP and ICMPv6 rules: errors translated, the data path's own answers
tunnel.py   the Tunnel rules
fullnat.py  the full-NAT rules: the tuple lent, both addresses rewritten
services.py the services and destinations configured, of both families
runner.py   the Fuzzer: maps, BPF_PROG_TEST_RUN, batches, the summary
__main__.py the standalone run in a private netns and state folder
"""

