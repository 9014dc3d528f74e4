"""The one exception a user's mistake raises: it ends a stage with one line, not a traceback."""


class UserError(Exception):
    """Something the user can fix (a param, a file, a source); the message says what and how."""
