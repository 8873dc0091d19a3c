"""The one error type for bad input: the CLI prints its message and exits 2."""


class InputError(Exception):
    """Bad user input (policy, data spec, model, flags).

    The message is one sentence that names the file, the key or line, and the fix.
    """


class QueryBudgetExceeded(InputError):
    """A model behind a prediction service would be queried beyond the data spec's query budget (`endpoint.budget`,
    records in all). An attack that runs into it is not applicable, with this message as the reason; anywhere else
    (reading the model's output convention) it is bad input, exit 2."""
