"""The one error type the suite raises for bad input: its message is a single sentence naming the fix."""


class DecnnError(Exception):
    """Bad input or a failed run, explained in one sentence that says what to do.

    ``exit_code`` is what the CLI exits with: 2 for configuration errors (as for bad options), 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(DecnnError):
    """A recipe, option or ``--set`` override that does not validate."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
