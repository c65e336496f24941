"""keepalived.conf's lexical rules, as keepalived's lib/parser.c reads a file.

* A line is read, its comment removed: `!` or `#` outside double quotes
  ends it (`\\!` and `\\#` outside quotes are the characters themselves).
* Words are separated by blanks; a double-quoted string is one word, without
  its quotes. `{` and `}` outside quotes are words of their own wherever
  they stand, and end the statement before them: keepalived splits
  `real_server 1.2.3.4 80 { weight 2 }` into the lines `real_server 1.2.3.4 80`,
  `{`, `weight 2`, `}`.
* `include PATTERN` (a line of its own) reads the files the glob pattern
  matches, in sorted order, in place of the line; a relative pattern is
  relative to the directory of the file that includes it (keepalived changes
  to that directory while reading it).

The result is a tree: a Stmt is a statement's words and where it is, and the
block that follows it (the `{ ... }` right after it), if any. Which keywords
take a block is the parser's business (xdplb/keepalived/conf.py).

Errors are keepalived's words prefixed as keepalived prefixes them,
`(FILE: Line N) message`, and are collected: the caller sees them all.
keepalived's `$DEFINITIONS`, `@system_id` lines and `~SEQ` are not supported:
such lines are statements like any other (and are refused where they stand).
"""
import glob
import os
from dataclasses import dataclass, field

BOB, EOB = "{", "}"


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self):
        return f"({self.file}: Line {self.line})"


class ConfigError(Exception):
    """keepalived.conf is wrong; every error found, each with file and line."""

    def __init__(self, errors):
        super().__init__("\n".join(f"{w} {msg}" if w else msg for w, msg in errors))
        self.errors = errors


@dataclass
class Stmt:
    words: list
    where: Where
    block: list | None = None        # the statements of the { } after it
    block_end: Where | None = field(default=None, compare=False)

    @property
    def keyword(self):
        return self.words[0]

    @property
    def args(self):
        return self.words[1:]


def decomment(line):
    """The line without its comment (outside quotes), escapes of comment
    characters resolved; the second value is whether a quote is left open."""
    out, quote, i = [], False, 0
    while i < len(line):
        c = line[i]
        if c == '"':
            quote = not quote
        elif c == "\\" and i + 1 < len(line):
            if not quote and line[i + 1] in "#!":
                out.append(line[i + 1])
                i += 2
                continue
            out.append(line[i:i + 2])
            i += 2
            continue
        elif c in "#!" and not quote:
            break
        out.append(c)
        i += 1
    return "".join(out).strip(), quote


def words(text):
    """Words of a decommented line: quoted strings whole, braces apart."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in BOB + EOB:
            out.append(c)
            i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            end = n if end < 0 else end
            out.append(text[i + 1:end])
            i = end + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in BOB + EOB + '"':
                j += 1
            out.append(text[i:j])
            i = j
    return out


class Reader:
    """Reads a file and its includes into a list of (words, Where) lines,
    braces split off, collecting errors."""

    def __init__(self):
        self.errors = []
        self.notes = []             # [(what, Where)] skipped without error
        self.files = []             # every file read, in order
        self._stack = []

    def error(self, where, msg):
        self.errors.append((where, msg))

    def read(self, path, where=None):
        real = os.path.realpath(path)
        if real in self._stack:
            self.error(where, f"include loop: '{path}' is already being read")
            return []
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            self.error(where, f"Configuration file '{path}' open problem ({e.strerror})")
            return []
        self._stack.append(real)
        self.files.append(path)
        try:
            return self._lines(path, text)
        finally:
            self._stack.pop()

    def _lines(self, path, text):
        out = []
        for n, raw in enumerate(text.splitlines(), 1):
            where = Where(path, n)
            line, open_quote = decomment(raw)
            if open_quote:
                self.error(where, f"Unterminated quote '{line}'")
            if not line:
                continue
            w = words(line)
            if w[0] == "include" and BOB not in w and EOB not in w:
                out += self._include(path, where, w)
                continue
            start = 0
            for i, word in enumerate(w):    # split at every brace (keepalived's read_line)
                if word in (BOB, EOB):
                    if w[start:i]:
                        out.append((w[start:i], where))
                    out.append(([word], where))
                    start = i + 1
            if w[start:]:
                out.append((w[start:], where))
        return out

    def _include(self, path, where, w):
        if len(w) != 2:
            self.error(where, "include takes one file name pattern")
            return []
        pattern = w[1]
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(path) or ".", pattern)
        names = sorted(glob.glob(pattern))
        if not names:
            if glob.has_magic(pattern):      # keepalived: logged, not an error
                self.notes.append((f"include '{w[1]}': no config files matched", where))
                return []
            self.error(where, f"Config files missing '{w[1]}'.")
            return []
        out = []
        for name in names:
            if os.path.isdir(name):
                self.error(where, f"Configuration file '{name}' is a directory - skipping")
                continue
            out += self.read(name, where)
        return out


def tree(lines, reader):
    """Statements with their blocks from (words, Where) lines."""
    root, stack = [], []
    current = root
    last = None                 # the statement a '{' would open a block of
    for w, where in lines:
        if w == [BOB]:
            if last is None or last.block is not None:
                reader.error(where, "Unexpected '{' - ignoring")
                continue
            last.block = []
            stack.append((current, last))
            current, last = last.block, None
        elif w == [EOB]:
            if not stack:
                reader.error(where, "Extra '}' found")
                continue
            current, opened = stack.pop()
            opened.block_end = where
            last = None
        else:
            last = Stmt(w, where)
            current.append(last)
    if stack:
        _, opened = stack[-1]
        reader.error(opened.where, f"There are {len(stack)} missing '{EOB}'s or extra "
                                   f"'{BOB}'s")
    return root


def parse_file(path):
    """The statement tree of a keepalived.conf, the files read and what was
    skipped; raises ConfigError with every lexical error."""
    reader = Reader()
    if not os.path.exists(path):
        raise ConfigError([(None, f"Configuration file '{path}' open problem "
                                  f"(No such file or directory)")])
    stmts = tree(reader.read(path), reader)
    if reader.errors:
        raise ConfigError(reader.errors)
    return stmts, reader.files, reader.notes
