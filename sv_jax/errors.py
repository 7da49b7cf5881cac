"""The one exception type for bad user input, and the checks that several stages share."""

import ml_collections


class UserError(Exception):
    """Bad input (config, data, model folder, checkpoint) that the user must fix.

    The entry point prints its message as a single line and exits non-zero, so the
    message must name the file, line or config key at fault.
    """


class Diverged(Exception):
    """A non-finite loss or gradient norm: the stage stops (exit status 1) with one line naming the step,
    its newest checkpoint from before that step."""


def require_steps(settings: ml_collections.ConfigDict, section: str, *keys: str) -> None:
    """Raises UserError unless each of `section`'s step counts `keys` is at least 1: with none a
    training stage would export its starting policy as if trained."""
    for key in keys:
        if settings[key] < 1:
            raise UserError(f"config key '{section}.{key}' ({settings[key]}) must be at least 1")
