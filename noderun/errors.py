"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's request or files, reported as one line without a traceback.

    The message must name the bad value and say what would be valid.
    """
