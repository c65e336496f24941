"""`xdplb lab demo` (`make demo`): seed 000 replayed through xdplb on the lab.

The seed (docs/seed-demo.md) is a deploy log: INFO lines, the answers of six
HTTP requests, the IPVS tables. This prints the same, step by step:

1. rr from the host (the client): `#3 #2 #1 #3 #2 #1`;
2. rs1 ("pod1") to weight 3, wrr: `#1 #1 #3 #2 #1 #1`;
3. "Pod to ClusterIP": rs1 calls the VIP while xdplb runs only on the
   client's side (the lb's veth-client): the lb has no route to the VIP, so
   nothing answers (six blank lines, counters unchanged);
4. "Creating IPVS dummy interface": the lab's equivalent is attaching xdplb to
   the pods' side too (veth-rs1..3); rr order, and rs1's own turn fails (its
   DNATed SYN comes back to it from its own address: a martian):
   `#3 #2 <blank> #3 #2 <blank>`;
5. "Enabling Hairpin connections": `-E ... -s wrr --hairpin`: rs1's own turn
   is source-NATed to the lb's address, so all six answer `#3 #2 #1 #3 #2 #1`.

From step 3 on the seed's counters grow by 2 connections per real server per
six requests, which only equal weights give: the demo sets rs1 back to weight 1
(as the seed must have, unlogged) and says so. Each step's answers are checked:
demo() returns 1 if any differ from the seed's.
"""
import sys
import time

from .lab import BACKENDS, BACKEND_IFS, CLIENT_IFS, Lab, PREFIX, VIP

SVC = f"{VIP}:80"
POD = "rs1"          # the seed's "pod1": a real server calling its own service
POD_TIMEOUT = 2      # seconds for a pod's request (its own turn never answers)

# (INFO line, the expected answers: service numbers, "" for no answer)
HOST = "Generating HTTP traffic (Host to IPVS Service)"
PODS = "Generating HTTP traffic (Pod to IPVS Service)"
EXPECTED = {
    "rr": ["3", "2", "1"] * 2,
    "wrr": ["1", "1", "3", "2", "1", "1"],
    "no-route": [""] * 6,
    "martian": ["3", "2", ""] * 2,
    "hairpin": ["3", "2", "1"] * 2,
}


class Replay:
    """One run of the seed: the lab, where the log goes, and whether every
    step's answers were the seed's."""

    def __init__(self, lab, out, err):
        self.lab, self.out, self.err = lab, out, err
        self.ok = True

    def log(self, msg):
        print(f"{time.strftime('%H:%M:%S')} - INFO: {msg}", file=self.out, flush=True)

    def show(self, text):
        self.out.write(text)
        self.out.flush()

    def note(self, msg):
        print(msg, file=self.err, flush=True)

    def adm(self, *args):
        return self.lab.adm(*args).stdout

    def traffic(self, what, node, expected, timeout=5):
        """Six requests from node, each answer (or a blank line) printed as the
        seed prints it; False, and said on stderr, if they are not expected."""
        self.log(what)
        got = []
        for _ in expected:
            body = self.lab.curl(node=node, timeout=timeout)
            self.show(body if body.endswith("\n") else body + "\n")
            got.append(body.strip().rpartition("#")[2] if body else "")
        if got != expected:
            self.note(f"demo: {what}: answers {_words(got)}, seed 000 has {_words(expected)}")
            self.ok = False
        return got

    def stats(self):
        self.show(self.adm("-L", "-n", "--stats"))
        self.show("\n")

    def attach(self, ifnames):
        return self.lab.xdplb("attach", "--mode", self.lab.mode, *ifnames).stdout.splitlines()

    def detach(self, ifnames):
        return self.lab.xdplb("detach", *ifnames).stdout.splitlines()


def _words(answers):
    return " ".join(f"#{a}" if a else "(none)" for a in answers)


def run(r):
    """The seed's steps, in its order."""
    lab = r.lab
    lab.adm("-C")
    lab.adm("-A", "-t", SVC, "-s", "rr")
    for addr in BACKENDS.values():
        lab.adm("-a", "-t", SVC, "-r", f"{addr}:80", "-m")
    r.log("Using Round Robin scheduling algorithm")
    r.show("\n")
    r.traffic(HOST, "client", EXPECTED["rr"])
    r.stats()
    r.log("Increase pod1 weight")
    lab.adm("-e", "-t", SVC, "-r", f"{BACKENDS[POD]}:80", "-m", "-w", "3")
    lab.adm("-E", "-t", SVC, "-s", "wrr")
    r.show(r.adm("-L", "-n"))
    r.show("\n")
    r.log("Using Weighted Round Robin scheduling algorithm")
    r.show("\n")
    r.traffic(HOST, "client", EXPECTED["wrr"])
    r.stats()

    r.log("Validating communication between Pod and ClusterIP")
    lab.adm("-e", "-t", SVC, "-r", f"{BACKENDS[POD]}:80", "-m", "-w", "1")
    r.detach(BACKEND_IFS)
    r.show(f"lab: xdplb on the clients' side only ({' '.join(CLIENT_IFS)}), detached from "
           f"the pods' ({' '.join(BACKEND_IFS)}); pod1 ({POD}) back to weight 1\n")
    r.show("\n")
    r.traffic(PODS, POD, EXPECTED["no-route"], timeout=POD_TIMEOUT)
    r.stats()

    r.log("Creating IPVS dummy interface")
    r.attach(BACKEND_IFS)
    r.show(f"lab: xdplb attached to the pods' side too ({' '.join(BACKEND_IFS)}): "
           f"the VIP {VIP} answers there\n")
    r.show("\n")
    r.traffic(PODS, POD, EXPECTED["martian"], timeout=POD_TIMEOUT)
    r.stats()

    r.log("Enabling Hairpin connections")
    lab.adm("-E", "-t", SVC, "-s", "wrr", "--hairpin")
    r.show("\n")
    r.traffic(PODS, POD, EXPECTED["hairpin"], timeout=POD_TIMEOUT)
    r.stats()


def demo(prefix=PREFIX, out=None, err=None):
    """Replay seed 000 through xdplb; returns 0 if every answer came back as expected."""
    out = out or sys.stdout
    err = err or sys.stderr
    lab = Lab(prefix, say=lambda msg: print(msg, file=err, flush=True))
    was_up = lab.is_up()
    if was_up and lab.two_arm:
        lab.say(f"lab {prefix!r} is the two-armed one: the seed runs on the one-armed lab "
                "(`xdplb lab down`, then `xdplb lab demo`)")
        return 1
    if not was_up:
        lab.up()
    r = Replay(lab, out, err)
    try:
        run(r)
    finally:
        if not was_up:
            lab.down(quiet=True)
            r.note(f"lab {prefix!r} torn down (it was not up before the demo)")
        else:
            missing = [i for i in BACKEND_IFS if i not in lab.attached()]
            if missing:
                r.attach(missing)
            r.note(f"lab {prefix!r} left up, xdplb on all its veths (`xdplb lab down` "
                   "removes it)")
    if not r.ok:
        r.note("demo: some answers differed from the seed's (see above)")
    return 0 if r.ok else 1
