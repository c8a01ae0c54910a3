"""The one exception type users see: a clear, one-line message naming the problem."""


class TvmqError(Exception):
    """An error caused by the user's input or environment, not by a bug in tvmq.

    The CLI prints ``str(err)`` on one line and exits non-zero, without a traceback.
    """
