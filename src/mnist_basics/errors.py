"""The one exception a user's mistake raises: it ends a stage with one line, not a traceback."""


class UserError(Exception):
    """Something the user can fix (a param, a file, a source); the message says what and how."""


class BadFile(UserError):
    """A file that is not what a stage writes. `why` is the reason alone, for a caller that names
    the file its own way (a model read from a git revision has no path to fix)."""

    def __init__(self, path: object, why: str, hint: str = "") -> None:
        super().__init__(f"{path}: {why}" + (f"; {hint}" if hint else ""))
        self.why = why
