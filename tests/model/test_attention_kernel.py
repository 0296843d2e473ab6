"""The attention kernel's fp32 entry point (AVX2, AVX-512 and AVX-512 + BF16 variants): exact
against float64 attention, masks, strides, backend and variant choice. Every kernel test runs
once per variant this CPU has."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from geolatent.model import attention as attention_mod
from geolatent.model import attention_kernel as ak


@pytest.fixture(scope="module", params=["avx2", "avx512", "avx512_bf16"])
def kernel(request):
    if ak.requested_backend() == "sdpa":
        pytest.skip("GEOLATENT_ATTENTION=sdpa: the kernel is switched off")
    if request.param not in ak.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} variant")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOLATENT_ATTENTION_ISA", request.param)
        try:
            ak._load()
        except ak.KernelUnavailable as exc:
            pytest.skip(f"attention kernel unavailable here: {exc}")
        assert ak.kernel_isa() == request.param
        yield ak


def reference(q, k, v, key_valid=None):
    """float64 softmax(q k^T / sqrt(d)) v on [B, N, H, d]; rows without valid keys -> 0."""
    t = [x.double().transpose(1, 2) for x in (q, k, v)]
    scores = t[0] @ t[1].transpose(-1, -2) / q.shape[-1] ** 0.5
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return (weights @ t[2]).transpose(1, 2)


def rand(*shape, scale=1.0, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("d", [16, 32, 48, 64])
@pytest.mark.parametrize("nq,nk", [(1, 1), (7, 5), (130, 129), (1000, 1000), (600, 2100)])
def test_matches_float64(kernel, d, nq, nk):
    q, k, v = rand(2, nq, 3, d, seed=1), rand(2, nk, 3, d, seed=2), rand(2, nk, 3, d, seed=3)
    with torch.no_grad():
        out = kernel.attention(q, k, v)
    assert out.shape == (2, nq, 3, d) and out.is_contiguous()
    torch.testing.assert_close(out.double(), reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_as_accurate_as_sdpa_on_long_rows(kernel):
    """12,288 keys (a 64x64 px, T=12, S2+S1 sample at p=4): error at PyTorch's own level."""
    n, h, d = 12288, 2, 16
    q, k, v = rand(1, n, h, d, seed=4), rand(1, n, h, d, seed=5), rand(1, n, h, d, seed=6)
    q = q[:, :300]  # a slice of queries keeps the float64 reference small
    with torch.no_grad():
        ours = kernel.attention(q, k, v)
        sdpa = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)))
    ref = reference(q, k, v)
    err_ours = (ours.double() - ref).abs().max().item()
    err_sdpa = (sdpa.transpose(1, 2).double() - ref).abs().max().item()
    assert err_ours <= max(2 * err_sdpa, 5e-7), (err_ours, err_sdpa)


def sdpa_error(q, k, v, key_valid=None) -> float:
    """PyTorch's own fp32 error against float64 on the same inputs."""
    mask = None if key_valid is None else key_valid[:, None, None, :]
    out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), mask)
    ref = reference(q, k, v, key_valid)
    keep = key_valid.any(dim=1) if key_valid is not None else torch.ones(q.shape[0], dtype=bool)
    return (out.transpose(1, 2).double() - ref)[keep].abs().max().item()


def test_bounded_and_online_softmax_rows_in_one_call(kernel):
    """Rows with small |q| |k| take the fixed-offset path, large ones the online maximum."""
    q, k, v = (
        rand(1, 120, 2, 16, seed=15),
        rand(1, 500, 2, 16, seed=16),
        rand(1, 500, 2, 16, seed=17),
    )
    q[:, 60:] *= 30  # |q| * max|k| far beyond the fixed-offset limit
    with torch.no_grad():
        out = kernel.attention(q, k, v)
    err = (out.double() - reference(q, k, v)).abs()
    assert err[:, :60].max() < 1e-6
    assert err.max() <= 2 * sdpa_error(q, k, v) + 1e-6


def test_large_scores_do_not_overflow(kernel):
    """Scores of hundreds (peaked softmax) stay finite and exact."""
    q, k, v = (
        rand(1, 64, 2, 16, scale=12, seed=7),
        rand(1, 300, 2, 16, scale=12, seed=8),
        rand(1, 300, 2, 16, seed=9),
    )
    with torch.no_grad():
        out = kernel.attention(q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q, k, v), atol=1e-5, rtol=1e-5)


def test_key_padding_mask_and_rows_without_keys(kernel):
    b, nq, nk, h, d = 3, 50, 200, 4, 16
    q, k, v = rand(b, nq, h, d, seed=10), rand(b, nk, h, d, seed=11), rand(b, nk, h, d, seed=12)
    valid = torch.rand(b, nk, generator=torch.Generator().manual_seed(13)) > 0.4
    valid[2] = False  # a sample with no valid key at all
    with torch.no_grad():
        out = kernel.attention(q, k, v, valid)
    torch.testing.assert_close(out.double(), reference(q, k, v, valid), atol=1e-5, rtol=1e-5)
    assert (out[2] == 0).all()
    # Masked keys have no influence at all: changing them changes nothing.
    k2, v2 = k.clone(), v.clone()
    k2[~valid], v2[~valid] = 1e6, -1e6
    with torch.no_grad():
        assert torch.equal(kernel.attention(q, k2, v2, valid), out)


@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_propagates_like_pytorch(kernel, where):
    """A NaN is never silently dropped: the rows it reaches are NaN, exactly as with SDPA (bf16
    inputs too, on the variant with the bf16 kernel)."""
    t = {"q": rand(1, 20, 2, 16, seed=20), "k": rand(1, 40, 2, 16, seed=21),
         "v": rand(1, 40, 2, 16, seed=22)}  # fmt: skip
    t[where][0, 5, 0, 3] = float("nan")
    with torch.no_grad():
        sdpa = F.scaled_dot_product_attention(*(t[n].transpose(1, 2) for n in "qkv"))
        if kernel.kernel_isa() == "avx512_bf16":
            bf = kernel.attention(*(t[n].bfloat16() for n in "qkv"))
            assert torch.equal(torch.isnan(bf), torch.isnan(sdpa.transpose(1, 2)))
        out = kernel.attention(t["q"], t["k"], t["v"])
    assert torch.isnan(out).any()
    assert torch.equal(torch.isnan(out), torch.isnan(sdpa.transpose(1, 2)))


def test_strided_views_are_read_in_place(kernel):
    """q, k, v as views of one [B, N, 3, H, d] buffer (the model's layout) and a transposed d."""
    b, n, h, d = 2, 97, 4, 16
    qkv = rand(b, n, 3, h, d, seed=14)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    with torch.no_grad():
        out = kernel.attention(q, k, v)
        out_t = kernel.attention(q, k, v.transpose(-1, -2).contiguous().transpose(-1, -2))
    torch.testing.assert_close(out.double(), reference(q, k, v), atol=1e-5, rtol=1e-5)
    assert torch.equal(out, out_t)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    nq=st.integers(1, 80),
    nk=st.integers(1, 600),
    h=st.integers(1, 4),
    d=st.sampled_from([16, 32, 48, 64]),
    p_valid=st.floats(0.0, 1.0),
    scale=st.sampled_from([0.1, 1.0, 3.0, 8.0]),
    seed=st.integers(0, 2**16),
)
def test_property_equals_float64_attention(b, nq, nk, h, d, p_valid, scale, seed):
    try:
        ak._load()
    except ak.KernelUnavailable as exc:
        pytest.skip(f"attention kernel unavailable here: {exc}")
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, n, h, d, generator=g) for n in (nq, nk, nk))
    q, k = q * scale, k * scale  # scale 8: scores of hundreds, the online-maximum path
    valid = torch.rand(b, nk, generator=g) < p_valid
    with torch.no_grad():
        out = ak.attention(q, k, v, valid)
    err = (out.double() - reference(q, k, v, valid)).abs().max().item()
    limit = 1e-5 if not valid.any() else 1e-5 + 2 * sdpa_error(q, k, v, valid)
    assert err <= limit, (err, limit)


def test_rejects_what_it_cannot_compute(kernel):
    q = torch.zeros(1, 4, 2, 16)
    with pytest.raises(ValueError, match="head width 8"):
        kernel.attention(torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8))
    with pytest.raises(ValueError, match="disagree"):
        kernel.attention(q, torch.zeros(1, 4, 3, 16), torch.zeros(1, 4, 3, 16))
    with pytest.raises(ValueError, match="float32 .or bfloat16. CPU"):
        kernel.attention(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match="key_valid"):
        kernel.attention(q, q, q, torch.ones(1, 5, dtype=torch.bool))


def test_used_only_without_autograd(kernel):
    q = torch.zeros(1, 4, 2, 16)
    with torch.no_grad():
        assert kernel.can_use(q)
        assert not kernel.can_use(q.double())
        assert not kernel.can_use(torch.zeros(1, 4, 2, 24))
    assert not kernel.can_use(q)  # grad enabled: training goes through SDPA


@pytest.mark.parametrize("masked", [False, True])
def test_block_inference_path_equals_training_path(kernel, masked, monkeypatch):
    """The blocked no-grad path (row blocks + kernel) computes what the autograd path computes."""
    monkeypatch.setattr(attention_mod, "INFERENCE_ROWS", 37)  # blocks that do not divide N
    torch.manual_seed(0)
    block = attention_mod.Block(128, 8).eval()
    x = torch.randn(2, 300, 128)
    valid = torch.rand(2, 300) > 0.3 if masked else None
    expected = block(x, key_valid=valid)  # grad enabled -> SDPA path
    assert expected.requires_grad
    with torch.no_grad():
        got = block(x, key_valid=valid)
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)


def test_backend_env_values(monkeypatch):
    monkeypatch.setenv("GEOLATENT_ATTENTION", "sdpa")
    with torch.no_grad():
        assert not ak.can_use(torch.zeros(1, 4, 2, 16))
    assert ak.attention_backend().startswith("sdpa")
    monkeypatch.setenv("GEOLATENT_ATTENTION", "fastest")
    with pytest.raises(ValueError, match="GEOLATENT_ATTENTION"):
        ak.requested_backend()


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_compiled_once_into_the_cache(kernel, tmp_path):
    code = """
        import torch
        from geolatent.model import attention_kernel as ak
        ak._load()
        print(ak.attention_backend())
    """
    env = {"GEOLATENT_CACHE_DIR": str(tmp_path), "GEOLATENT_ATTENTION": "auto"}
    first = _run(code, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "kernel"
    (lib,) = tmp_path.glob(f"attention_{ak.kernel_isa()}-*.so")
    stamp = lib.stat().st_mtime_ns
    second = _run(code, env)
    assert second.returncode == 0 and lib.stat().st_mtime_ns == stamp
    assert len(list(tmp_path.iterdir())) == 1  # no temporary file left behind


@pytest.mark.skipif(not ak._cpu_has_avx2_fma(), reason="this CPU has no AVX2 + FMA")
def test_without_a_compiler_auto_warns_and_kernel_errors(tmp_path):
    code = """
        import torch
        import geolatent
        model = geolatent.build_model("nano").eval()
        x = {"sentinel2_l2a": torch.rand(1, 8, 8, 2, 12) * 3000}
        ts = torch.tensor([[[1, 0, 2024], [1, 1, 2024]]])
        out = model.embed(x, timestamps=ts, patch_size=4)
        print("ok", out.pooled.shape)
    """
    env = {"GEOLATENT_CACHE_DIR": str(tmp_path), "CC": str(tmp_path / "no-such-cc")}
    auto = _run(code, {**env, "GEOLATENT_ATTENTION": "auto"})
    assert auto.returncode == 0, auto.stderr
    assert "ok torch.Size([1, 128])" in auto.stdout
    assert "attention kernel unavailable" in auto.stderr and "no C compiler" in auto.stderr
    forced = _run(code, {**env, "GEOLATENT_ATTENTION": "kernel"})
    assert forced.returncode != 0
    assert "KernelUnavailable" in forced.stderr and "no C compiler" in forced.stderr


def test_auto_picks_the_widest_variant_and_a_missing_one_is_named(monkeypatch):
    have = ak.supported_isas()
    if not have:
        pytest.skip("no kernel variant runs on this CPU")
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "auto")
    assert ak._choose_isa() == have[0]
    assert have == [isa for isa in ak.ISAS[1:] if isa in have]  # widest first
    monkeypatch.setattr(ak, "cpu_has", lambda *f: "avx512f" not in f)  # a CPU without AVX-512
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "avx512")
    with pytest.raises(ak.KernelUnavailable, match="lacks AVX512F"):
        ak._choose_isa()
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "auto")
    assert ak._choose_isa() == "avx2"
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "sse")
    with pytest.raises(ValueError, match="GEOLATENT_ATTENTION_ISA='sse'"):
        ak._choose_isa()
