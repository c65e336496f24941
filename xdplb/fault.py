"""Fault injection for the crash tests (tests/test_crash.py); inert otherwise.

XDPLB_FAULT_KILL=<kind>:<n> makes the process SIGKILL itself right before
the n-th time it reaches a point of that kind (counted from process start):

  write    each map write syscall of a journal's apply (xdplb/journal.py; a
           redo's too), and, after a command's own apply, one more point
           before its journal is removed
  journal  the journal is written and fsynced under its temporary name, before
           the rename that commits it
  pin      each pin of create_state (xdplb/loader.py), and one more before the
           rename that publishes the folder
  attach   before xdp_attach and before the tx_ports update, per interface
  detach   before the tx_ports delete and before xdp_detach, per interface,
           and (whole detach) before the state is unpinned
  remove   state.remove, after the program pin is gone, before the rest
  replace  loader.replace: before pinning the old prog array and the old
           program again (as PREV_PINS), before publishing the new array
           and the new program, per interface swapped, and before each
           old pin goes

A run whose n is past its last point ends normally: the tests count a
command's points by raising n until it does.
"""
import os
import signal

_counts = {}


def point(kind):
    spec = os.environ.get("XDPLB_FAULT_KILL")
    if not spec:
        return
    want, _, n = spec.partition(":")
    if want != kind:
        return
    _counts[kind] = _counts.get(kind, 0) + 1
    if str(_counts[kind]) == n:
        os.kill(os.getpid(), signal.SIGKILL)
