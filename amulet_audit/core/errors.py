"""The one error type for bad input: the CLI prints its message and exits 2."""


class InputError(Exception):
    """Bad user input (policy, data spec, model, flags).

    The message is one sentence that names the file, the key or line, and the fix.
    """
