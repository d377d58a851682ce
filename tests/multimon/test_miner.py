"""The blocked search against a brute-force pass over the full similarity matrices."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retain.errors import RetainError
from retain.multimon.miner import erroneous_agreements


def clustered(n: int, dim: int, seed: int, spread: float) -> torch.Tensor:
    """Unit vectors around a few centres, so that many pairs pass a 0.9 cosine."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, dim, generator=g)
    x = centres[torch.randint(0, 6, (n,), generator=g)] + spread * torch.randn(n, dim, generator=g)
    return F.normalize(x, dim=-1)


def brute_force(t: torch.Tensor, r: torch.Tensor, threshold: float, gap: float) -> dict:
    """Every i < j passing both criteria, from the full matrices in float64."""
    st = t.double().numpy() @ t.double().numpy().T
    sr = r.double().numpy() @ r.double().numpy().T
    i, j = np.triu_indices(len(t), k=1)
    ok = (st[i, j] > threshold) & (np.abs(st[i, j] - sr[i, j]) > gap)
    return {(int(a), int(b)): (st[a, b], sr[a, b]) for a, b in zip(i[ok], j[ok])}


def near_boundary(pairs: dict, threshold: float, gap: float, eps: float = 1e-5) -> set:
    return {p for p, (ct, cr) in pairs.items() if abs(ct - threshold) < eps or abs(abs(ct - cr) - gap) < eps}


@pytest.mark.parametrize("block,chunk", [(7, 11), (64, 64), (1000, 1000), (13, 4096)])
def test_finds_exactly_the_brute_force_pairs(block, chunk):
    t, r = clustered(300, 16, 0, 0.25), clustered(300, 24, 1, 0.6)
    truth = brute_force(t, r, 0.9, 0.2)
    assert len(truth) > 50  # the test is not vacuous
    got = erroneous_agreements(t, r, top_k=None, block=block, chunk=chunk, progress=False)
    found = set(zip(got.i.tolist(), got.j.tolist()))
    fuzzy = near_boundary(truth, 0.9, 0.2)
    assert found ^ set(truth) <= fuzzy
    assert all(i < j for i, j in found) and len(found) == len(got)  # each unordered pair once
    for i, j, ct, cr in zip(got.i, got.j, got.cos_target, got.cos_reference):
        assert ct == pytest.approx(truth[(i, j)][0], abs=1e-5) and cr == pytest.approx(truth[(i, j)][1], abs=1e-5)
    assert got.stats["pairs_compared"] == 300 * 299 // 2
    assert got.stats["agreements"] == len(got)


def test_top_k_is_the_k_highest_target_cosines_in_order():
    t, r = clustered(400, 16, 2, 0.3), clustered(400, 24, 3, 0.6)
    truth = brute_force(t, r, 0.9, 0.2)
    assert len(truth) > 150
    got = erroneous_agreements(t, r, top_k=150, block=50, chunk=97, progress=False)
    best = sorted(truth, key=lambda p: (-truth[p][0], p))[:150]
    assert list(zip(got.i.tolist(), got.j.tolist())) == best
    assert np.all(np.diff(got.cos_target) <= 0)
    assert got.stats["agreements"] == len(truth) and got.stats["kept"] == 150


def test_dense_and_gathered_reference_paths_agree():
    # Tight clusters: most tile entries are candidates, so the dense reference tile is used;
    # loose ones: few are, so they are gathered. Both must match brute force.
    for spread in (0.05, 0.4):
        t, r = clustered(200, 8, 4, spread), clustered(200, 32, 5, 0.8)
        truth = brute_force(t, r, 0.9, 0.2)
        got = erroneous_agreements(t, r, top_k=None, block=32, chunk=32, progress=False)
        assert set(zip(got.i.tolist(), got.j.tolist())) ^ set(truth) <= near_boundary(truth, 0.9, 0.2)


def test_thresholds_are_configurable_and_identical_encoders_never_disagree():
    t = clustered(150, 16, 6, 0.3)
    assert len(erroneous_agreements(t, t, top_k=None, progress=False)) == 0  # the gap is zero everywhere
    r = clustered(150, 24, 7, 0.6)
    loose = erroneous_agreements(t, r, threshold=0.5, gap=0.1, top_k=None, progress=False)
    strict = erroneous_agreements(t, r, threshold=0.95, gap=0.4, top_k=None, progress=False)
    assert set(zip(strict.i, strict.j)) <= set(zip(loose.i, loose.j)) and len(loose) > len(strict)
    assert set(zip(loose.i.tolist(), loose.j.tolist())) ^ set(brute_force(t, r, 0.5, 0.1)) <= near_boundary(
        brute_force(t, r, 0.5, 0.1), 0.5, 0.1)


def test_bad_input():
    t = clustered(10, 4, 0, 0.3)
    with pytest.raises(RetainError, match="same sentences"):
        erroneous_agreements(t, t[:9], progress=False)
    with pytest.raises(RetainError, match="top_k"):
        erroneous_agreements(t, t, top_k=0, progress=False)
