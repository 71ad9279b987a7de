"""Mutation-killing tests for medgan.eval.synthetic: KID is unbiased, and memorisation counts only strictly nearer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mni_t1_path

import medgan
from medgan.eval.synthetic import kernel_distance, linear_mmd, memorisation_summary


def _kid(a: np.ndarray, b: np.ndarray, degree: int = 3) -> float:
    """The unbiased polynomial-kernel MMD^2 of KID (Binkowski et al. 2018, eq. 4): diagonal terms left out."""
    d = a.shape[1]
    kaa, kbb, kab = ((x @ y.T / d + 1.0) ** degree for x, y in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    return float(
        (kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean()
    )


def test_kernel_distance_is_the_unbiased_kid_of_real_patches():
    """Features: 4x4x4 patches of the real MNI T1 (standardised), two sets from two halves of the brain. A biased
    estimate (diagonal kept, divided by m^2) adds about mean(k(x, x)) / m, which with 20 items shows in every digit."""
    t1 = np.asarray(medgan.load_scan(mni_t1_path()), dtype=np.float64)[0, 40:104, 60:124, 60:100]
    patches = t1.reshape(16, 4, 16, 4, 10, 4).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 64)
    patches = (patches - patches.mean()) / patches.std()
    a, b = patches[:20], patches[-30:]
    assert kernel_distance(a, b) == pytest.approx(_kid(a, b), rel=1e-9)


def test_a_synthetic_image_as_near_as_the_nearest_real_one_is_not_counted_as_nearer():
    """``frac_below_real_min`` counts synthetic images *nearer* to a training image than any held-out real image
    is; one exactly as near (a tie) is not evidence of copying."""
    summary = memorisation_summary([0.25, 0.5, 0.75], [0.25, 0.6])
    assert summary["frac_below_real_min"] == 0.0
    assert memorisation_summary([0.1, 0.5], [0.25, 0.6])["frac_below_real_min"] == 0.5


def test_linear_mmd_subsamples_the_larger_set_at_random_not_its_first_items():
    """The larger set is subsampled at random (seeded): taking its first items scored a set ordered by subject or
    slice on one part of it only, and ``seed`` then changed nothing."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 4))
    b = np.concatenate([rng.normal(size=(10, 4)), rng.normal(size=(30, 4)) + 3.0])  # first 10 like a, the rest not
    values = {round(linear_mmd(a, b, seed=s), 12) for s in range(3)}
    assert len(values) == 3  # the seed picks the subsample
    assert min(values) > linear_mmd(a, b[:10]) + 1.0  # a random 10 of b hold shifted items; b's first 10 do not
