"""Exceptions that the command line turns into exit codes and one-line messages."""


class TTFlowError(Exception):
    """A failure the user should see as a short message; the CLI exits with 1."""

    exit_code = 1


class ConfigError(TTFlowError):
    """Invalid usage, spec file or option value; the CLI exits with 2."""

    exit_code = 2


class RunFileError(TTFlowError):
    """A run file that is missing, unreadable, of another format, or would be overwritten."""

    exit_code = 2


class NumericalError(TTFlowError):
    """A non-finite value where a finite one is required; the message names where it came from."""

    exit_code = 1
