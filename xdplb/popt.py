"""popt, as much of it as ipvsadm 1.31's command line relies on.

Its rules decide what ipvsadm makes of odd command lines, so xdplbadm
follows them exactly: a short option's argument may be attached (-srr) or
the next word; bundled letters (-Ln); --name=value; an optional argument is
only taken when the next word does not start with '-'; `--` ends the
options. Errors carry popt's texts (printed as "WORD: text").
"""

NONE, REQ, OPT = 0, 1, 2

POPT_NOARG = "missing argument"
POPT_BADOPT = "unknown option"
POPT_UNWANTED = "option does not take an argument"



class PoptError(Exception):
    def __init__(self, bad, text):
        super().__init__(bad, text)
        self.bad, self.text = bad, text


class Popt:
    """The subset of popt that ipvsadm relies on: options by short letter
    (bundled: -Ln, with an attached argument: -srr) and long name (--x=y),
    plain arguments collected in args, `--` ending the options. short and
    long map a letter or name to its (long, short, argument kind, tag) row."""

    def __init__(self, argv, short, long):
        self.argv, self.next, self.chars, self.args = argv, 1, "", []
        self.done = False
        self.short, self.long = short, long

    def bad(self):
        return self.argv[self.next - 1] if self.next > 0 else ""

    def _take(self, kind):
        """Argument of an option whose letters are exhausted."""
        if self.next < len(self.argv):
            nxt = self.argv[self.next]
            if kind == OPT and nxt.startswith("-"):
                return None
            self.next += 1
            return nxt
        if kind == OPT:
            return None
        raise PoptError(self.bad(), POPT_NOARG)

    def get(self):
        """(tag, arg) of the next option, or None at the end."""
        while True:
            if self.chars:
                c, self.chars = self.chars[0], self.chars[1:]
                opt = self.short.get(c)
                if opt is None:
                    self.chars = ""
                    raise PoptError(self.bad(), POPT_BADOPT)
                if opt[2] == NONE:
                    return opt[3], None
                if self.chars:
                    arg, self.chars = self.chars, ""
                    return opt[3], arg
                return opt[3], self._take(opt[2])
            if self.next >= len(self.argv):
                return None
            a = self.argv[self.next]
            self.next += 1
            if self.done or a == "-" or not a.startswith("-"):
                self.args.append(a)
                continue
            if a == "--":
                self.done = True
                continue
            if a.startswith("--"):
                name, eq, val = a[2:].partition("=")
                opt = self.long.get(name)
                if opt is None:
                    raise PoptError(a, POPT_BADOPT)
                if opt[2] == NONE:
                    if eq:
                        raise PoptError(a, POPT_UNWANTED)
                    return opt[3], None
                if eq:
                    return opt[3], val
                return opt[3], self._take(opt[2])
            self.chars = a[1:]
