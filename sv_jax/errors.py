"""The one exception type for bad user input."""


class UserError(Exception):
    """Bad input (config, data, model folder, checkpoint) that the user must fix.

    The entry point prints its message as a single line and exits non-zero, so the
    message must name the file, line or config key at fault.
    """
