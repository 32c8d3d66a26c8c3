"""Argument checks shared across subpackages."""

import math


def check_nonnegative(value, name):
    """Returns `value` as a float; raises if it is not a finite number >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a finite, non-negative number. "
            f"Received: {name}={value!r}"
        )
    return float(value)
