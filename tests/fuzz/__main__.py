"""`python -m tests.fuzz`: the standalone run (`make fuzz`) in a netns and a
state folder of its own, both removed on exit."""
import argparse
import contextlib
import os
import random
import sys

from xdplb import loader, state, testnet

from .runner import Fuzzer


@contextlib.contextmanager
def fuzz_env():
    """(pinned state, test network): the program compiled and pinned in
    <bpffs>/xdplb/fuzz-<pid>, the network in netns xdplbfz-<pid>-dp, which the
    calling thread is in meanwhile."""
    net = testnet.build(f"xdplbfz-{os.getpid()}")
    try:
        with state.private_folder(f"fuzz-{os.getpid()}") as folder, \
                loader.open_state(folder) as s, net["ns"].entered():
            for idx in (net["cli_idx"], net["srv_idx"]):
                s.tx_ports.put(idx, s.tx_ports.value_type(idx))
            yield s, net
    finally:
        net["ns"].delete()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz",
                                 description="Fuzz the XDP data path through BPF_PROG_TEST_RUN.")
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to run (default 10^6)")
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed (default: random, printed)")
    ap.add_argument("--batch", type=int, default=4096,
                    help="frames between map resets and table checks (default 4096)")
    ap.add_argument("--stop", action="store_true",
                    help="stop after the first batch with a violation")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("tests.fuzz: needs root (netns, bpffs, BPF_PROG_TEST_RUN)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"xdplb fuzz: seed {seed}, {args.frames} frames "
          f"(reproduce with: python -m tests.fuzz --frames {args.frames} --seed {seed})",
          flush=True)
    with fuzz_env() as (s, net):
        fz = Fuzzer(s, net, seed=seed, batch=args.batch, log=lambda m: print(m, flush=True))
        try:
            bad = fz.run(args.frames, stop_on_violation=args.stop)
        finally:
            fz.cleanup()
        print(fz.summary(), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
