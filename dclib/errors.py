"""User-facing errors: one clear line each, printed by the CLI without a traceback."""


class DclibError(Exception):
    """An error caused by the user's input or environment (bad file, unknown model, bad schedule).

    The message is written to be read on its own: it says what was wrong and, where it can, what to do.
    """


class ModelNotFoundError(DclibError):
    """A model id or folder could not be resolved (unknown id, not cached while offline, bad folder)."""


class InputError(DclibError):
    """An input file or argument is unreadable or malformed (image, prompt file, schedule, plan)."""
