"""Argument checks shared across subpackages."""

import math

import numpy as np


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


def check_positive(value, name, what="number"):
    """Returns `value` as a float; raises if it is not a finite number > 0.
    `what` names the kind of value in the message ("learning rate", ...)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive, finite {what}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_int(value, name, minimum=1):
    """Returns `value` as an int; raises if it is not an integer >= `minimum`
    (bools and floats such as `2.0` are refused, NumPy integers accepted)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        allowed = {
            0: "a non-negative integer",
            1: "a positive integer",
        }.get(minimum, f"an integer >= {minimum}")
        raise ValueError(
            f"`{name}` must be {allowed}. Received: {name}={value!r}"
        )
    return int(value)
