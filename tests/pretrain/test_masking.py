"""modality_cross_random: properties (hypothesis) and the spec's ratios in expectation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geolatent.modalities import MISSING_VALUE, MODALITIES
from geolatent.model.tokens import MaskValue
from geolatent.pretrain.masking import missing_tokens, modality_cross_random, token_to_pixel_mask

ENC, TGT, DEC, MIS = (int(v) for v in MaskValue)
ALL = list(MODALITIES)


def _grid(mod: str, b: int, h: int, t: int) -> tuple[int, ...]:
    m = MODALITIES[mod]
    return (b, h, h, t if m.multitemporal else 1, m.num_bandsets)


@st.composite
def batches(draw):
    """Per-modality missing masks of a random batch; every sample keeps >= 1 present token of an
    encodable modality and >= 2 present tokens, so it can have an encoded and a decoded one."""
    b = draw(st.integers(1, 5))
    h = draw(st.integers(1, 3))
    t = draw(st.integers(1, 3))
    mods = draw(st.lists(st.sampled_from(ALL), min_size=1, max_size=5, unique=True))
    enc_mods = [m for m in mods if MODALITIES[m].encoder_input]
    if not enc_mods:
        mods.append("sentinel1")
        enc_mods = ["sentinel1"]
    seed = draw(st.integers(0, 2**31 - 1))
    p_missing = draw(st.sampled_from([0.0, 0.3, 0.7, 0.95]))
    g = torch.Generator().manual_seed(seed)
    missing = {m: torch.rand(_grid(m, b, h, t), generator=g) < p_missing for m in mods}
    keep = missing[enc_mods[0]].view(b, -1)
    keep[:, 0] = False
    keep[:, -1] = False
    if keep.shape[1] == 1:  # a single token: add a second present one elsewhere
        other = next((m for m in mods if m != enc_mods[0]), None)
        if other is None:
            other = "srtm"
            missing[other] = torch.ones(_grid(other, b, h, t), dtype=torch.bool)
        missing[other].view(b, -1)[:, 0] = False
    return missing, seed


def _present_counts(missing):
    return sum((~x).flatten(1).sum(1) for x in missing.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_masking_properties(case):
    missing, seed = case
    view = modality_cross_random(missing, generator=torch.Generator().manual_seed(seed))
    b = next(iter(missing.values())).shape[0]
    n_enc = torch.zeros(b, dtype=torch.long)
    n_dec = torch.zeros(b, dtype=torch.long)
    for m, roles in view.token_mask.items():
        assert roles.shape == missing[m].shape and roles.dtype == torch.long
        assert set(roles.unique().tolist()) <= {ENC, TGT, DEC, MIS}
        # MISSING exactly where there is no data: never encoded, never decoded.
        assert torch.equal(roles == MIS, missing[m])
        if MODALITIES[m].decode_only:
            assert not (roles == ENC).any(), f"decode-only {m} was encoded"
        n_enc += (roles == ENC).flatten(1).sum(1)
        n_dec += (roles == DEC).flatten(1).sum(1)
    enc_ok = sum((~x).flatten(1).sum(1) for m, x in missing.items() if MODALITIES[m].encoder_input)
    assert (enc_ok > 0).all() and (_present_counts(missing) >= 2).all()  # strategy precondition
    assert (n_enc >= 1).all(), "a sample has no encoded token"
    assert (n_dec >= 1).all(), "a sample has no decoded token"
    # Reproducible from the generator seed.
    again = modality_cross_random(missing, generator=torch.Generator().manual_seed(seed))
    assert all(torch.equal(view.token_mask[m], again.token_mask[m]) for m in missing)


def test_ratios_match_spec_in_expectation():
    """All 8 pairs present, 6 encodable: E[k] = (2 + 6) / 2, E[m] = (1 + 8) / 2; inside chosen
    pairs half of the tokens are encode (decode) slots."""
    mods = ["sentinel2_l2a", "sentinel1", "landsat", "worldcover", "srtm"]
    b = 4000
    missing = {m: torch.zeros(_grid(m, b, 2, 2), dtype=torch.bool) for m in mods}
    view = modality_cross_random(missing, generator=torch.Generator().manual_seed(0))
    assert view.encoded_pairs.sum(1).float().mean().item() == pytest.approx(4.0, abs=0.08)
    assert view.decoded_pairs.sum(1).float().mean().item() == pytest.approx(4.5, abs=0.1)
    k = view.encoded_pairs.sum(1)
    assert k.min().item() == 2 and k.max().item() == 6
    enc_frac, dec_frac = [], []
    for i, (m, s) in enumerate(view.pairs):
        roles = view.token_mask[m][..., s].reshape(b, -1)
        chosen_e, chosen_d = view.encoded_pairs[:, i], view.decoded_pairs[:, i]
        if MODALITIES[m].decode_only:
            assert not chosen_e.any()
        else:
            enc_frac.append((roles[chosen_e] == ENC).float().mean())
        dec_frac.append((roles[chosen_d] == DEC).float().mean())
    assert torch.stack(enc_frac).mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.stack(dec_frac).mean().item() == pytest.approx(0.5, abs=0.02)


def test_one_and_two_pair_samples():
    """One present pair: encoded (its decode slots refilled); two: one encoded, one decoded."""
    b = 200
    one = {"sentinel1": torch.zeros(b, 2, 2, 2, 1, dtype=torch.bool)}
    v1 = modality_cross_random(one, generator=torch.Generator().manual_seed(1))
    assert v1.encoded_pairs.all() and not v1.decoded_pairs.any()
    two = {"sentinel1": torch.zeros(b, 2, 2, 2, 1, dtype=torch.bool),
           "srtm": torch.zeros(b, 2, 2, 1, 1, dtype=torch.bool)}  # fmt: skip
    v2 = modality_cross_random(two, generator=torch.Generator().manual_seed(2))
    # srtm is decode-only, so sentinel1 is the encoded pair and srtm the decoded one.
    assert v2.encoded_pairs[:, 0].all() and not v2.encoded_pairs[:, 1].any()
    assert v2.decoded_pairs[:, 1].all() and not v2.decoded_pairs[:, 0].any()
    assert not (v2.token_mask["sentinel1"] == DEC).any()


def test_missing_tokens_and_pixel_mask():
    x = torch.zeros(2, 4, 4, 3, 12)
    x[0, :2, :2, 1, :4] = MISSING_VALUE  # bandset 0 of one 2x2 patch at t=1
    x[1, :, :, 2] = MISSING_VALUE  # a whole timestep
    x[1, 0, 0, 0, 4:10] = MISSING_VALUE  # one pixel only: the token is not missing
    miss = missing_tokens("sentinel2_l2a", x, 2)
    assert miss.shape == (2, 2, 2, 3, 3)
    assert miss[0, 0, 0, 1, 0] and miss.sum().item() == 1 + 2 * 2 * 3
    assert miss[1, :, :, 2].all() and not miss[1, 0, 0, 0].any()
    roles = torch.randint(0, 4, (2, 2, 2, 3, 3))
    pix = token_to_pixel_mask(roles, 2)
    assert torch.equal(pix[:, ::2, ::2], roles) and torch.equal(pix[:, 1::2, 1::2], roles)
