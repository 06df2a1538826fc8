"""The one error type for bad user input: the CLI prints its message on one line and exits 2."""


class InputError(Exception):
    """Bad params, manifest or image: the message names the field or file."""


class ReportError(InputError):
    """The analysis notebook or the hand-off failed; the message says where to look."""
