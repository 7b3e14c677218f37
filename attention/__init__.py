"""attention: recurrent visual attention models (RAM, DRAW-style soft attention) for comparative research."""

__version__ = "0.1.0"


class AttentionError(Exception):
    """A user-facing error: bad input, impossible configuration, missing data.

    The CLI prints its message on one line and exits non-zero, without a traceback.
    """
