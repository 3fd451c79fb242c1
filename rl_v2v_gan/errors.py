"""Errors a user can cause. The CLI turns each into one line on stderr and a non-zero exit."""


class UserError(Exception):
    """A mistake in the user's input (path, file, flag, checkpoint): one clear line, no traceback.

    ``exit_code`` is 2 for invalid flags or configuration (argparse's convention) and 1 for
    everything else (missing or corrupt files, mismatched checkpoints, ...).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """An invalid flag or configuration value; exit code 2."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
