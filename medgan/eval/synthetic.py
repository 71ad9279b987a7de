"""Metrics for judging synthetic images: realism (Fréchet / kernel distances), memorisation and detection AUC.

* :func:`frechet_distance` and :func:`linear_mmd` wrap MONAI's ``FIDMetric`` / ``MMDMetric`` for ``(N, D)``
  feature vectors; :func:`kernel_distance` is the polynomial-kernel MMD of KID (MONAI's MMD is linear-kernel only).
* :func:`nearest_neighbour` finds, for each query, its nearest reference item (RMSE in pixel space or L2 in a
  feature space), the basis of the memorisation check: synthetic images much nearer to a training image than
  held-out real images are, are likely copies.
* :func:`roc_auc` is the area under the ROC curve by the Mann-Whitney rank formula (scikit-learn is not a
  dependency); :func:`mean_sd` formats seed summaries.

All functions take NumPy arrays or tensors and return plain Python floats / NumPy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from medgan.errors import MedganError

__all__ = [
    "frechet_distance",
    "linear_mmd",
    "kernel_distance",
    "nearest_neighbour",
    "memorisation_summary",
    "roc_auc",
    "mean_sd",
]


def _features(a: Any, b: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets of a distance as float64 ``(N, D)`` tensors, checked once for every metric.

    Each set must be ``(N >= 2, D)`` and finite, and the two must share ``D``. Only the Fréchet distance checked
    ``D`` (the MMDs failed with raw MONAI / torch shape errors), and none checked finiteness: a NaN feature gave a
    SciPy ``sqrtm`` internal error or a silent NaN in a results table.
    """
    out = []
    for what, x in (("a", a), ("b", b)):
        t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if t.is_complex() or t.dtype == torch.bool:
            raise MedganError(f"{metric}: set {what} must hold real feature values, got {t.dtype}")
        t = t.to(torch.float64)
        if t.ndim != 2 or t.shape[0] < 2:
            raise MedganError(f"{metric}: set {what}: expected (N >= 2, D) feature vectors, got shape {tuple(t.shape)}")
        bad = ~torch.isfinite(t)
        if bad.any():
            rows = int(bad.any(dim=1).sum())
            raise MedganError(
                f"{metric}: set {what} holds NaN or infinite features ({int(bad.sum())} value(s) in {rows} of its "
                f"{t.shape[0]} vectors); drop or fix those items"
            )
        out.append(t)
    fa, fb = out
    if fa.shape[1] != fb.shape[1]:
        raise MedganError(f"{metric}: feature sizes differ: {fa.shape[1]} (set a) and {fb.shape[1]} (set b)")
    return fa, fb


def frechet_distance(a: Any, b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (MONAI ``FIDMetric``).

    Parameters
    ----------
    a, b
        ``(N_a, D)`` and ``(N_b, D)`` feature vectors. The estimate is biased upwards for small ``N``: compare
        values only between sets of equal sizes against the same reference.

    Returns
    -------
    float
        ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; 0 for identical sets (up to round-off).

    Raises
    ------
    medgan.errors.MedganError
        A set that is not ``(N >= 2, D)``, holds NaN / infinite values, or has another ``D`` than the other set
        (the message names the set).
    """
    from monai.metrics import FIDMetric

    fa, fb = _features(a, b, "frechet_distance")
    if fa.shape[1] == 1:  # MONAI squeezes a 1 x 1 covariance to 0-d and cannot multiply it: same formula here
        return max(_frechet_scipy(fa.numpy(), fb.numpy()), 0.0)
    try:
        value = float(FIDMetric()(fa, fb))
    except TypeError:  # MONAI <= 1.6 passes sqrtm(disp=False), which SciPy >= 1.18 removed: same formula here
        value = _frechet_scipy(fa.numpy(), fb.numpy())
    return max(value, 0.0)  # sqrtm round-off can give -1e-12 for identical sets


def _frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = sqrtm(sa @ sb)
    if not np.isfinite(covmean).all():  # nearly singular product: MONAI's epsilon offset
        eps = 1e-6 * np.eye(sa.shape[0])
        covmean = sqrtm((sa + eps) @ (sb + eps))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sa) + np.trace(sb) - 2.0 * np.trace(np.real(covmean)))


def linear_mmd(a: Any, b: Any, *, seed: int = 0) -> float:
    """Unbiased linear-kernel MMD^2 between two sets of feature vectors (MONAI ``MMDMetric``).

    MONAI's metric needs equally many samples: the larger set is subsampled (without replacement, seeded).
    Unbiased, so it can be slightly negative when the sets come from one distribution.

    Parameters
    ----------
    a, b
        ``(N_a, D)`` and ``(N_b, D)`` feature vectors.
    seed
        Seed of the subsampling.

    Raises
    ------
    medgan.errors.MedganError
        A set that is not ``(N >= 2, D)``, holds NaN / infinite values, or has another ``D`` than the other set
        (the message names the set).
    """
    from monai.metrics import MMDMetric

    fa, fb = _features(a, b, "linear_mmd")
    n = min(fa.shape[0], fb.shape[0])
    rng = np.random.default_rng(seed)
    if fa.shape[0] > n:
        fa = fa[torch.as_tensor(np.sort(rng.choice(fa.shape[0], n, replace=False)))]
    if fb.shape[0] > n:
        fb = fb[torch.as_tensor(np.sort(rng.choice(fb.shape[0], n, replace=False)))]
    return float(MMDMetric()(fa, fb))


def kernel_distance(a: Any, b: Any, *, degree: int = 3) -> float:
    """Unbiased MMD^2 with the polynomial kernel ``(x . y / D + 1)^degree`` (the kernel inception distance, KID).

    Hand-written because MONAI's ``MMDMetric`` only has the linear kernel. Unlike the Fréchet distance it is
    unbiased, so sets of different sizes can be compared; values near 0 (possibly negative) mean "indistinguishable".

    Parameters
    ----------
    a, b
        ``(N_a, D)`` and ``(N_b, D)`` feature vectors.
    degree
        Polynomial degree.

    Raises
    ------
    medgan.errors.MedganError
        A set that is not ``(N >= 2, D)``, holds NaN / infinite values, or has another ``D`` than the other set
        (the message names the set).
    """
    fa, fb = _features(a, b, "kernel_distance")
    d = fa.shape[1]

    def k(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x @ y.T / d + 1.0) ** degree

    m, n = fa.shape[0], fb.shape[0]
    kaa, kbb, kab = k(fa, fa), k(fb, fb), k(fa, fb)
    term_a = (kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1))
    term_b = (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
    return float(term_a + term_b - 2.0 * kab.mean())


def nearest_neighbour(
    queries: Any,
    reference: Any,
    *,
    metric: str = "rmse",
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each query to its nearest reference item, and that item's index.

    Parameters
    ----------
    queries, reference
        ``(N, ...)`` and ``(M, ...)`` arrays of one item shape (images or feature vectors); flattened per item.
    metric
        ``"rmse"`` (root mean squared difference, for images: independent of image size) or ``"l2"``
        (Euclidean, for feature vectors).
    chunk
        Queries per distance block (bounds memory).

    Returns
    -------
    distance, index
        ``(N,)`` float64 and ``(N,)`` int64 arrays (empty for no queries).

    Raises
    ------
    medgan.errors.MedganError
        An unknown ``metric``, no reference items, items of other sizes, or NaN / infinite values.
    """
    if metric not in ("rmse", "l2"):
        raise MedganError(f"metric must be 'rmse' or 'l2', got {metric!r}")
    # reshape(len, -1) of zero items is ambiguous (a bare RuntimeError for no queries): the item size is explicit
    q, r = (np.asarray(x, dtype=np.float64) for x in (queries, reference))
    q, r = (torch.as_tensor(x.reshape(len(x), math.prod(x.shape[1:]))) for x in (q, r))
    if q.shape[1] != r.shape[1] or not len(r):
        raise MedganError(f"queries {tuple(q.shape)} and reference {tuple(r.shape)} do not match")
    for what, x in (("query", q), ("reference", r)):  # a NaN item gave NaN distances (or a wrong nearest item)
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            raise MedganError(
                f"nearest_neighbour: {int(bad.sum())} of the {x.shape[0]} {what} items hold NaN or infinite values"
            )
    dist, index = [], []
    for start in range(0, q.shape[0], chunk):
        dmat = torch.cdist(q[start : start + chunk], r)
        d, i = dmat.min(dim=1)
        dist.append(d)
        index.append(i)
    out = torch.cat(dist).numpy() if dist else np.zeros(0)
    if metric == "rmse":
        out = out / np.sqrt(q.shape[1])
    return out, (torch.cat(index).numpy() if index else np.zeros(0, dtype=np.int64))


def memorisation_summary(synthetic_nn: Any, real_nn: Any) -> dict[str, float]:
    """Compare nearest-training-item distances of synthetic images with those of held-out real images.

    Parameters
    ----------
    synthetic_nn
        Distance of each synthetic image to its nearest training image.
    real_nn
        Distance of each held-out real image to its nearest training image (the "no copy" scale).

    Returns
    -------
    dict
        ``median_synthetic``, ``median_real``, ``ratio`` (median synthetic / median real: well below 1 suggests
        copying), ``frac_below_real_min`` (fraction of synthetic images nearer to a training image than any
        held-out real image is) and ``min_synthetic``.

    Raises
    ------
    medgan.errors.MedganError
        No synthetic or no real distance, or a NaN / infinite distance.
    """
    s = np.asarray(synthetic_nn, dtype=np.float64).ravel()
    r = np.asarray(real_nn, dtype=np.float64).ravel()
    if not len(s) or not len(r):
        raise MedganError("memorisation_summary needs at least one synthetic and one real distance")
    for what, x in (("synthetic_nn", s), ("real_nn", r)):  # a NaN distance made the median and ratio NaN silently
        if not np.isfinite(x).all():
            raise MedganError(
                f"memorisation_summary: {what} holds {int((~np.isfinite(x)).sum())} NaN or infinite distance(s)"
            )
    med_r = float(np.median(r))
    return {
        "median_synthetic": float(np.median(s)),
        "median_real": med_r,
        "ratio": float(np.median(s) / med_r) if med_r > 0 else float("inf"),
        "frac_below_real_min": float(np.mean(s < r.min())),
        "min_synthetic": float(s.min()),
    }


def roc_auc(negative_scores: Any, positive_scores: Any) -> float:
    """Area under the ROC curve: probability that a positive scores higher than a negative (ties count 1/2).

    The Mann-Whitney U statistic over average ranks (scikit-learn is not a dependency).

    Parameters
    ----------
    negative_scores, positive_scores
        Scores of the negatives (e.g. real images) and of the positives (e.g. synthetic images); ``inf`` ranks
        above every number, NaN has no rank.

    Returns
    -------
    float

    Raises
    ------
    medgan.errors.MedganError
        No negative or no positive score, or a NaN score.
    """
    neg = np.asarray(negative_scores, dtype=np.float64).ravel()
    pos = np.asarray(positive_scores, dtype=np.float64).ravel()
    if not len(neg) or not len(pos):
        raise MedganError("roc_auc needs at least one negative and one positive score")
    if np.isnan(neg).any() or np.isnan(pos).any():  # ranked, a NaN gave a NaN AUC without a word (an inf ranks)
        raise MedganError(
            f"roc_auc: scores must not be NaN, got {int(np.isnan(neg).sum())} NaN negative and "
            f"{int(np.isnan(pos).sum())} NaN positive score(s)"
        )
    ranks = rankdata(np.concatenate([neg, pos]))  # average ranks: ties handled
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(neg) * len(pos)))


def mean_sd(values: Any, fmt: str = ".3f") -> str:
    """``"mean ± sd"`` (sample sd, ``ddof=1``) of finite values; ``"mean ± n/a"`` for one value, ``"n/a"`` for none.

    One value has no sample sd: ``"± 0.000"`` read as a perfectly reproducible result of a single seed.

    >>> mean_sd([0.5])
    '0.500 ± n/a'
    """
    v = np.asarray([x for x in np.asarray(values, dtype=np.float64).ravel() if np.isfinite(x)])
    if not len(v):
        return "n/a"
    sd = f"{float(np.std(v, ddof=1)):{fmt.lstrip('+')}}" if len(v) > 1 else "n/a"
    return f"{np.mean(v):{fmt}} ± {sd}"
