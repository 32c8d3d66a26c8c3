"""Which transfer strategy to try first, from target size and domain similarity."""

import dataclasses
import math

import numpy as np

STRATEGIES = (
    "feature_extraction",
    "gradual_unfreezing",
    "fine_tuning",
    "from_scratch",
    "domain_adaptation",
)


@dataclasses.dataclass(frozen=True)
class StrategyAdvice:
    """What `recommend_strategy` returns.

    Attributes:
        strategy: one of `"feature_extraction"`, `"gradual_unfreezing"`,
            `"fine_tuning"`, `"from_scratch"`, `"domain_adaptation"` (no
            target labels).
        reason: one or two sentences saying why.
        n_target: the number of labelled target examples it was given.
        similarity: the similarity in `[0, 1]` it used.
        size: `"none"` (no labels), `"small"` or `"large"`.
        similarity_level: `"high"` or `"low"`.
        size_threshold: `n_target` at or above which the data counts as large.
        similarity_threshold: similarity at or above which it counts as high.
        alternatives: other strategies worth a try in the same cell.
    """

    strategy: str
    reason: str
    n_target: int
    similarity: float
    size: str
    similarity_level: str
    size_threshold: int
    similarity_threshold: float
    alternatives: tuple = ()


def _similarity_from_report(report):
    if "proxy_a_distance" not in report:
        raise ValueError(
            "`similarity` must be a float in [0, 1] or the dict returned by "
            "`keras_transfer.strategies.domain_similarity` (with a "
            "'proxy_a_distance' entry). "
            f"Received: similarity with keys {sorted(report)}"
        )
    pad = report["proxy_a_distance"]
    if isinstance(pad, bool) or not isinstance(pad, (int, float, np.floating)) or not math.isfinite(pad):
        raise ValueError(
            "`similarity['proxy_a_distance']` must be a finite number. "
            f"Received: proxy_a_distance={pad!r}"
        )
    # PAD = 2 (1 - 2 err), so 1 - PAD / 2 = 2 err: 1 when the linear domain
    # classifier is at chance (err = 0.5), 0 when it separates the domains.
    # Cross-validation noise can push err slightly past 0.5 (PAD < 0); that
    # still means "indistinguishable", hence the clip to [0, 1].
    return float(min(1.0, max(0.0, 1.0 - float(pad) / 2.0)))


def recommend_strategy(
    n_target,
    similarity,
    n_classes=None,
    size_threshold=None,
    similarity_threshold=0.5,
):
    """Encodes the classic transfer-learning decision table.

    | target labels | similar to source      | dissimilar              |
    |---------------|------------------------|-------------------------|
    | none (0)      | `domain_adaptation`    | `domain_adaptation`     |
    | small         | `feature_extraction`   | `gradual_unfreezing`    |
    | large         | `fine_tuning`          | `from_scratch`          |

    - no target labels (`n_target=0`, an unlabelled target): unsupervised
      domain adaptation, i.e. train on labelled source data plus unlabelled
      target data with `CDANModel` (CDAN+E), `MCDModel` or
      `DomainAdversarialModel`, and pick the epoch or weight with a
      label-free score (`strategies.select_model`). When the similarity is
      high a model trained on the source alone may already do well, so
      source only is listed as the first alternative; when it is low no
      method is guaranteed to help (check it with `select_model`).

    - small + similar: a linear/MLP head on frozen features. Fine-tuning
      millions of weights on a few hundred labels overfits, and the frozen
      features already suit the task (CS231n's first case).
    - small + dissimilar: careful fine-tuning. The top layers are specific to
      the source task (Yosinski et al., 2014) so features from the top alone
      are weak, but there is too little data to retrain everything freely:
      unfreeze gradually from the top with discriminative (lower for lower
      layers) learning rates (`GradualUnfreezer`, `DiscriminativeLR`), or
      LoRA/adapters (`apply_lora`), optionally with L2-SP. CS231n suggests a
      classifier on earlier-layer features here; LoRA is listed as an
      alternative.
    - large + similar: fine-tune the whole network; with enough data it
      beats fixed features (Kornblith et al., 2019, found fine-tuning better
      than the best fixed features on all 12 of their datasets).
    - large + dissimilar: train from scratch is affordable and the prior
      helps little. Kornblith et al. (2019) saw ImageNet initialisation
      give only small accuracy gains over random initialisation on the
      fine-grained Stanford Cars and FGVC Aircraft sets at full size (it
      mostly converged faster), so pretrained initialisation
      (`fine_tuning`) stays a reasonable alternative.

    Which depth to transfer. The strategy says how much to train, not where
    to cut the base; measure that with `transferability(..., method="logme")`
    on the features of `truncate_model(base, num_blocks=k)` for each `k`
    (no training needed) and cut at the highest score. Tutorial 07
    (`tutorials/07_how_transferable_are_features.ipynb`) checks this on
    EfficientNet-Lite0 (ImageNet), 500 labelled target images at 64 px, a
    fresh top (2x2 average pooling and a linear softmax layer) on the first
    `k` blocks, 3 seeds:

    - near target, small (Fashion-MNIST; the table says
      `feature_extraction`, and the short fine-tuning below did not beat
      it): cut in the middle, not at the end of the base. Frozen features
      after block 5 (448-d) give 0.844 test accuracy, the whole base's
      `top` 0.776; LogME picks block 5.
    - far target, small (USPS digits; the table says `gradual_unfreezing`):
      the top of the base is the worst part to transfer frozen (0.735 at
      `top`, 0.859 after block 7, against 0.946 after block 4), a drop
      three times the near target's, as Yosinski et al. found for
      dissimilar tasks. Before unfreezing anything, try CS231n's
      "classifier on earlier-layer features": a head on the block the
      LogME curve picks (block 5 here, 0.943).
    - fine-tuning the first `k` blocks for 2 epochs (20 Adam steps at 1e-4,
      BatchNorm frozen) after that head changed test accuracy by at most
      0.4 points at any depth on either target: too short to show its
      benefit on this budget, so the tutorial does not confirm (or refute)
      the fine-tuning rows of the table; tutorial 01 (1,000 images, 4
      epochs) measured +1.7 points for fine-tuning the whole base.

    Thresholds (rules of thumb, not laws; override them for your setting):

    - Size: "large" when `n_target >= size_threshold`. The default is 1000
      examples, or `max(1000, 100 * n_classes)` when `n_classes` is given.
      This is our rule of thumb, not a number from the papers: below about
      100 labels per class a head on frozen features is hard to beat and
      full fine-tuning mostly overfits, while the papers' fine-tuning
      results use hundreds to thousands of examples per class (Yosinski et
      al., 2014, split ImageNet, ~600k images; the advantage of pretrained
      over random initialisation shrinks as the data grows in Kornblith et
      al., 2019).
    - Similarity: "high" when `similarity >= similarity_threshold`
      (default 0.5). From a `domain_similarity` report the similarity is
      `1 - PAD / 2` (clipped to `[0, 1]`), i.e. twice the error of a linear
      domain classifier: 1 when the domains cannot be told apart, 0 when
      a linear rule separates them perfectly. 0.5 means the classifier still
      errs on 25% of examples (PAD = 1), halfway between the two. On
      pretrained features almost every pair of datasets is linearly
      separable to some degree, so values near 1 are rare; what matters is
      how a candidate source ranks against other sources on the same
      target.

    Args:
        n_target: int >= 0, number of labelled target training examples;
            0 for an unlabelled target.
        similarity: float in `[0, 1]` (1 = same domain), or the dict returned
            by `keras_transfer.strategies.domain_similarity(source, target)`.
        n_classes: optional int > 0, the number of target classes (scales
            the default size threshold).
        size_threshold: optional int > 0, overrides the size threshold.
        similarity_threshold: float in `(0, 1)`.

    Returns:
        A `StrategyAdvice` with `strategy`, `reason` and the numbers used.

    Example:

    >>> import keras_transfer
    >>> advice = keras_transfer.strategies.recommend_strategy(500, 0.8)
    >>> advice.strategy
    'feature_extraction'
    >>> keras_transfer.strategies.recommend_strategy(50000, 0.1).strategy
    'from_scratch'

    Reference:
        [Yosinski et al., 2014](https://arxiv.org/abs/1411.1792),
        [Kornblith et al., 2019](https://arxiv.org/abs/1805.08974),
        [CS231n, Transfer Learning](https://cs231n.github.io/transfer-learning/)
    """
    if (
        isinstance(n_target, bool)
        or not isinstance(n_target, (int, np.integer))
        or n_target < 0
    ):
        raise ValueError(
            "`n_target` must be a non-negative integer (the number of "
            "labelled target examples; 0 for an unlabelled target). "
            f"Received: n_target={n_target!r}"
        )
    for name, value in (("n_classes", n_classes), ("size_threshold", size_threshold)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value <= 0
        ):
            raise ValueError(
                f"`{name}` must be a positive integer or None. "
                f"Received: {name}={value!r}"
            )
    if (
        isinstance(similarity_threshold, bool)
        or not isinstance(similarity_threshold, (int, float))
        or not 0 < similarity_threshold < 1
    ):
        raise ValueError(
            "`similarity_threshold` must be a number strictly between 0 and "
            f"1. Received: similarity_threshold={similarity_threshold!r}"
        )
    if isinstance(similarity, dict):
        value = _similarity_from_report(similarity)
    elif isinstance(similarity, bool) or not isinstance(
        similarity, (int, float, np.floating)
    ):
        raise ValueError(
            "`similarity` must be a float in [0, 1] or the dict returned by "
            "`keras_transfer.strategies.domain_similarity`. "
            f"Received: similarity={similarity!r}"
        )
    else:
        value = float(similarity)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(
                "`similarity` must be in [0, 1] (1 = same domain). "
                f"Received: similarity={similarity!r}"
            )
    if size_threshold is None:
        size_threshold = 1000 if n_classes is None else max(1000, 100 * int(n_classes))
    size_threshold = int(size_threshold)
    large = int(n_target) >= size_threshold
    high = value >= similarity_threshold
    size = "none" if n_target == 0 else "large" if large else "small"
    level = "high" if high else "low"
    facts = (
        f"{int(n_target)} target examples ({size}: threshold {size_threshold}) "
        f"and similarity {value:.2f} ({level}: threshold {similarity_threshold:g})"
    )
    if n_target == 0:
        strategy = "domain_adaptation"
        if high:
            alternatives = ("source_only", "cdan", "mcd", "dann")
            why = (
                "no target labels, and a close source: train on the source; "
                "unsupervised domain adaptation (CDAN+E, MCD or DANN on "
                "labelled source plus unlabelled target) may add a little, "
                "judged by a label-free score (`select_model`)."
            )
        else:
            alternatives = ("cdan", "mcd", "dann", "source_only")
            why = (
                "no target labels and a distant source: unsupervised domain "
                "adaptation (CDAN+E, MCD or DANN on labelled source plus "
                "unlabelled target); choose the epoch and weight with a "
                "label-free score (`select_model`), since nothing "
                "guarantees a gain."
            )
    elif not large and high:
        strategy, alternatives = "feature_extraction", ("lora",)
        why = (
            "the pretrained features already fit the target and too few "
            "labels to fine-tune millions of weights without overfitting: "
            "train a head on frozen features."
        )
    elif not large:
        strategy, alternatives = "gradual_unfreezing", ("lora", "l2sp")
        why = (
            "the top pretrained layers are specific to the source, but there "
            "is too little data to retrain freely: unfreeze from the top "
            "gradually with discriminative learning rates (or LoRA), "
            "optionally with L2-SP against forgetting."
        )
    elif high:
        strategy, alternatives = "fine_tuning", ("gradual_unfreezing",)
        why = (
            "enough data to adapt every layer and a close source: fine-tune "
            "the whole network from the pretrained weights with a low "
            "learning rate."
        )
    else:
        strategy, alternatives = "from_scratch", ("fine_tuning",)
        why = (
            "enough data to learn the target's own features and a distant "
            "source that helps little: train from scratch (pretrained "
            "initialisation may still converge faster)."
        )
    return StrategyAdvice(
        strategy=strategy,
        reason=f"{facts}: {why}",
        n_target=int(n_target),
        similarity=value,
        size=size,
        similarity_level=level,
        size_threshold=size_threshold,
        similarity_threshold=float(similarity_threshold),
        alternatives=alternatives,
    )
