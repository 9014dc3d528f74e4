"""The one exception a user's mistake raises: it ends a stage with one line, not a traceback."""

import contextlib


class UserError(Exception):
    """Something the user can fix (a param, a file, a source); the message says what and how."""


class BadFile(UserError):
    """A file that is not what a stage writes; `why` alone is for a caller that names the file
    its own way (a model read from a git revision has no path to fix)."""

    def __init__(self, path: object, why: str, hint: str = "") -> None:
        super().__init__(f"{printable(str(path))}: {why}" + (f"; {hint}" if hint else ""))
        self.why = why


def printable(text: str) -> str:
    """`text` as one line, to print a file name or a user's value: non-UTF-8 bytes as \\xff and
    control and invisible characters as \\n, \\x1b, \\u202e, so a name forges no line or escape."""
    with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate no name has: repr shows it
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def printable_lines(text: str) -> str:
    """`text` with each of its own lines made printable: a message's line breaks kept, the names
    in it (made printable where they are put in) forge none."""
    return "\n".join(printable(line) for line in text.split("\n"))
