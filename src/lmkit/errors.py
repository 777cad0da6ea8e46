"""The one exception type for problems with what the user gave us (a file, a flag, a config).

The command line prints such an error as a single line ``lmkit: error: <message>`` and exits
with status 2, never with a traceback; the message names the file or key and what is wrong.
"""


class LmkitError(Exception):
    """A user-facing error: bad input, a missing file, an impossible setting."""
