import numpy as np
import pytest
import torch

from cnnlab.analysis.frechet import feature_stats, frechet_distance, frechet_from_stats


def test_same_set_is_zero_and_noise_makes_it_grow():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 16, generator=g) @ torch.randn(16, 16, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    noise = torch.randn(a.shape, generator=g)
    d = [frechet_distance(a, a + s * noise) for s in (0.1, 0.5, 1.0, 2.0)]
    assert d[0] > 0 and all(x < y for x, y in zip(d, d[1:], strict=False))


def test_mean_shift_and_matches_scipy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(500, 8, generator=g)
    shift = torch.arange(8.0)
    # equal covariances: the distance is exactly the squared mean shift
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-9)
    b = torch.randn(400, 8, generator=g) * torch.linspace(0.5, 2, 8) + 0.3
    scipy_linalg = pytest.importorskip("scipy.linalg")
    (m1, s1), (m2, s2) = (tuple(t.numpy() for t in feature_stats(x)) for x in (a, b))
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_from_stats(*feature_stats(a), *feature_stats(b)) == pytest.approx(ref, rel=1e-6)


def test_needs_two_samples():
    with pytest.raises(ValueError):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
