"""The one exception type that the command line turns into a clean error message."""


class MicrovaeError(Exception):
    """A user-facing error: bad input, bad configuration, or a failed stage.

    The message names the file or configuration key at fault and what is wrong
    with it; the command line prints it without a traceback and exits with 1.
    """


def short_reason(exc: BaseException) -> str:
    """``Type: first sentence`` of a third-party error, for a one-line message: whole sentences
    only, and none of the library's advice (installing plugins, unsafe loading options)."""
    import re

    text = " ".join(str(exc).split())
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z(`])", text, maxsplit=1)[0]
    first = re.split(r"(?i)[.,;]?\s*(?:please\s+)?(?:try\s+)?`?pip install", first)[0]
    if "weights_only" in first:
        first = "the file is not a plain tensor archive"
    return f"{type(exc).__name__}: {first.strip().rstrip('.') or 'no detail'}"
