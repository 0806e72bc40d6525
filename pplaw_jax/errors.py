"""The one exception type for bad user input; the CLI turns it into a message and exit code 2."""


class PplawError(Exception):
    """Bad input or an unusable setting, with a message that names the file, line or field."""
