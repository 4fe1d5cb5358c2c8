"""fcnet's one exception type for errors a user can cause."""


class FcnetError(Exception):
    """A problem with the user's input, data or config.

    The CLI prints ``str(err)`` as one line and exits with status 2, no traceback.
    """
