"""The one encoder-output type: forward = forward_head(forward_features(...)), what `embed`
returns, and the 0-token / NaN-aggregate rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geolatent
from geolatent.model.encoder import EncoderOutput
from geolatent.model.tokens import MaskValue


@pytest.mark.parametrize("version", ["v1", "v1.3"])
def test_forward_is_head_of_features(version):
    torch.manual_seed(0)
    enc = geolatent.build_model("nano", version=version).encoder.eval()
    x = {"sentinel2_l2a": torch.rand(2, 8, 8, 2, 12), "sentinel1": torch.rand(2, 8, 8, 2, 2)}
    ts = torch.tensor([[[1, 0, 2024], [1, 1, 2024]]] * 2)
    with torch.no_grad():
        mask = {m: torch.zeros_like(t) for m, t in enc(x, ts, 4).token_mask.items()}
        mask["sentinel1"][1] = MaskValue.MISSING  # sample 1: no Sentinel-1 token is encoded
        for token_mask in (None, mask):
            whole = enc(x, ts, 4, token_mask)
            split = enc.forward_head(enc.forward_features(x, ts, 4, token_mask))
            assert isinstance(whole, EncoderOutput)
            for m in x:
                torch.testing.assert_close(split.tokens[m], whole.tokens[m], rtol=0, atol=0)
            torch.testing.assert_close(split.pooled, whole.pooled, rtol=0, atol=0)
            torch.testing.assert_close(split.project_aggregated, whole.project_aggregated,
                                       rtol=0, atol=0)
            if version == "v1.3":
                torch.testing.assert_close(split.location_tokens, whole.location_tokens,
                                           rtol=0, atol=0)
    # not-encoded tokens are exactly 0; told apart by the mask only
    assert float(whole.tokens["sentinel1"][1].abs().max()) == 0.0


def test_embed_returns_encoder_output_with_nan_aggregates():
    torch.manual_seed(0)
    model = geolatent.build_model("nano")
    s2 = np.full((2, 8, 8, 1, 12), 1500.0, dtype=np.float32)
    s2[1] = np.nan  # sample 1 has no valid input at all
    out = model.embed({"sentinel2_l2a": s2}, [[1, 0, 2024]], patch_size=4)
    assert isinstance(out, EncoderOutput) and out.patch_size == 4 and out.nonfinite == {}
    assert out.feature_map.shape == (2, 2, 2, model.embedding_dim)
    assert torch.isfinite(out.feature_map[0]).all() and torch.isfinite(out.pooled[0]).all()
    assert torch.isnan(out.feature_map[1]).all() and torch.isnan(out.pooled[1]).all()
    assert float(out.tokens["sentinel2_l2a"][1].abs().max()) == 0.0
