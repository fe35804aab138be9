"""One exception type for problems a user can fix (bad data, bad config, missing weights)."""


class KitError(Exception):
    """A user-facing error: the CLIs print its message and exit with status 2, no traceback."""
