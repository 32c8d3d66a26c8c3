"""Names of the transfer strategies, as the CLI's `--strategy` takes them."""

_STRATEGIES = {}


def register_strategy(name, strategy=None):
    """Registers a strategy function under `name`.

    A strategy is a function called as
    `strategy(base, head, x, y, validation_data=..., epochs=...,
    batch_size=..., callbacks=..., verbose=...)` that trains `head` (and,
    depending on the strategy, `base`) and returns a `keras.callbacks.History`
    or a tuple of them, one per phase. Use as a decorator or as a call.

    Args:
        name: the strategy's name, lower case with underscores, e.g.
            `"gradual_unfreezing"`.
        strategy: the function. If omitted, returns a decorator.

    Returns:
        `strategy` (unchanged), or a decorator when `strategy` is omitted.

    Example:

    ```python
    @keras_transfer.strategies.register_strategy("linear_probe")
    def linear_probe(base, head, x, y=None, **kwargs):
        ...
    ```
    """
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(
            "`name` must be a lower-case identifier such as "
            f"'gradual_unfreezing'. Received: name={name!r}"
        )

    def register(fn):
        if not callable(fn):
            raise ValueError(
                f"`strategy` must be callable. Received: strategy={fn!r}"
            )
        if name in _STRATEGIES and _STRATEGIES[name] is not fn:
            raise ValueError(
                f"A strategy named {name!r} is already registered "
                f"({_STRATEGIES[name].__module__}."
                f"{_STRATEGIES[name].__qualname__}). Pick another name. "
                f"Received: name={name!r}"
            )
        _STRATEGIES[name] = fn
        return fn

    return register if strategy is None else register(strategy)


def available_strategies():
    """Returns the registered strategy names, sorted."""
    return tuple(sorted(_STRATEGIES))


def get_strategy(name):
    """Returns the strategy function registered under `name`.

    Args:
        name: a name from `available_strategies()`, e.g.
            `"feature_extraction"` or `"fine_tuning"`.

    Returns:
        The strategy function.
    """
    if not isinstance(name, str) or name not in _STRATEGIES:
        raise ValueError(
            f"Unknown `strategy`: {name!r}. Available strategies: "
            f"{', '.join(available_strategies())}. Received: strategy={name!r}"
        )
    return _STRATEGIES[name]
