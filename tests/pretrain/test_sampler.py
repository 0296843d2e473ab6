"""The v1 sampler: token budget, reproducibility, sharding across ranks."""

from __future__ import annotations

import pytest

from geolatent.modalities import MODALITIES
from geolatent.pretrain.sampler import PretrainBatchSampler, max_timesteps


def _tokens(h: int, t: int) -> int:
    return sum(h * h * m.num_bandsets * (t if m.multitemporal else 1) for m in MODALITIES.values())


@pytest.mark.parametrize("h", range(1, 13))
def test_max_timesteps_is_largest_t_under_budget(h):
    t = max_timesteps(h)
    assert 1 <= t <= 12 and _tokens(h, t) <= 2250
    assert t == 12 or _tokens(h, t + 1) > 2250


def test_anchor_shape_and_known_values():
    assert max_timesteps(8) == 4  # 16 px at p=2: the benchmark anchor (T=4)
    assert max_timesteps(12) == 1 and max_timesteps(1) == 12 and max_timesteps(6) == 9


def _all(sampler):
    return [req for micro in sampler for req in micro]


def test_plan_ranges_and_reproducibility():
    s = PretrainBatchSampler(50, 8, 4, seed=3, end_step=200)
    plans = [s.plan(k) for k in range(200)]
    assert {p.patch_size for p in plans} == set(range(1, 9))
    assert {p.grid for p in plans} == set(range(1, 13))
    assert all(p.timesteps == max_timesteps(p.grid) for p in plans)
    again = PretrainBatchSampler(50, 8, 4, seed=3, end_step=200)
    assert _all(s) == _all(again)
    other = PretrainBatchSampler(50, 8, 4, seed=4, end_step=200)
    assert _all(s) != _all(other)


def test_resume_position_and_epochs():
    full = _all(PretrainBatchSampler(10, 4, 2, seed=0, end_step=9))
    tail = _all(PretrainBatchSampler(10, 4, 2, seed=0, start_step=5, end_step=9))
    assert full[5 * 4 :] == tail
    idx = [r.index for r in full]
    # 36 draws over 10 samples: every epoch of 10 is a permutation.
    for e in range(3):
        assert sorted(idx[e * 10 : (e + 1) * 10]) == list(range(10))


def test_ranks_share_the_global_batch():
    one = PretrainBatchSampler(30, 8, 2, seed=1, end_step=5)
    ranks = [
        PretrainBatchSampler(30, 8, 2, seed=1, end_step=5, rank=r, world_size=2) for r in (0, 1)
    ]
    assert one.micro_batches_per_rank == 4 and ranks[0].micro_batches_per_rank == 2
    merged = sorted((r for s in ranks for r in _all(s)), key=lambda r: (r.step, r.micro_index))
    assert merged == _all(one)
    assert {r.micro_index % 2 for r in _all(ranks[1])} == {1}


def test_crop_never_exceeds_small_samples():
    s = PretrainBatchSampler(5, 2, 2, end_step=100, min_sample_px=16)
    assert all(s.plan(k).grid * s.plan(k).patch_size <= 16 for k in range(100))


def test_invalid_batch_split():
    with pytest.raises(ValueError, match="multiple"):
        PretrainBatchSampler(5, 6, 4)
