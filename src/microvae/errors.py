"""The one exception type that the command line turns into a clean error message."""


class MicrovaeError(Exception):
    """A user-facing error: bad input, bad configuration, or a failed stage.

    The message names the file or configuration key at fault and what is wrong
    with it; the command line prints it without a traceback and exits with 1.
    """
