"""`trainable_summary`: trainable vs total parameters, per layer."""

import numpy as np

from keras_transfer.strategies.peft import surgery


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def trainable_summary(model, print_fn=print):
    """Trainable vs total parameters, per layer and in total.

    Lists each layer that owns weights directly (LoRA layers and adapters
    as one row each).

    Args:
        model: a Keras model or layer.
        print_fn: function used to print the table, or `None` for silence.

    Returns:
        A dict with `"layers"` (a list of `(path, trainable, total)`),
        `"trainable"`, `"total"` and `"fraction"`.
    """
    trainable_ids = {id(v) for v in model.trainable_weights}
    rows = []
    for path, layer in [("", model)] + [
        (s.path, s.layer) for s in surgery.sites(model)
    ]:
        own = surgery.own_weights(layer)
        if own:
            rows.append(
                (
                    path or layer.name,
                    _count(v for v in own if id(v) in trainable_ids),
                    _count(own),
                )
            )
    seen, total_vars = set(), []
    for v in model.weights:
        if id(v) not in seen:
            seen.add(id(v))
            total_vars.append(v)
    total = _count(total_vars)
    trainable = _count(model.trainable_weights)
    summary = {
        "layers": rows,
        "trainable": trainable,
        "total": total,
        "fraction": trainable / total if total else 0.0,
    }
    if print_fn is not None:
        width = max([len(r[0]) for r in rows] + [5])
        lines = [f"{'layer':<{width}}  {'trainable':>12}  {'total':>12}"]
        lines += [f"{p:<{width}}  {t:>12,}  {n:>12,}" for p, t, n in rows]
        lines.append(
            f"{'TOTAL':<{width}}  {trainable:>12,}  {total:>12,}  "
            f"({100 * summary['fraction']:.3f}% trainable)"
        )
        print_fn("\n".join(lines))
    return summary
