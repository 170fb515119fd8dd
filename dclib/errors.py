"""User-facing errors: one clear line each, printed by the CLI without a traceback."""

import math


class DclibError(Exception):
    """An error caused by the user's input or environment (bad file, unknown model, bad schedule).

    The message is written to be read on its own: it says what was wrong and, where it can, what to do.
    """


class ModelNotFoundError(DclibError):
    """A model id or folder could not be resolved (unknown id, not cached while offline, bad folder)."""


class InputError(DclibError):
    """An input file or argument is unreadable or malformed (image, prompt file, schedule, plan)."""


class NonFiniteError(DclibError):
    """The errors of an image are NaN or inf (a numerically broken model, dtype or option): no prediction."""


def check_finite(name: str, value) -> float:
    """``value`` as a float, or an :class:`InputError` naming the option when it is not a finite number.

    NaN compares false with every bound, so range checks alone let it through (and then every error is NaN).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return number
