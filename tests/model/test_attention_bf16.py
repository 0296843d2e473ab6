"""The bf16 attention kernel (AVX512_BF16): accuracy against the fp32 kernel on the same bf16
inputs, masks, strides, memory at 12,288 tokens, and which path the bf16 encoder takes (NaN:
test_attention_kernel.py).

Kernel tests run only where the CPU has AVX512_BF16 (they skip with the reason elsewhere); the
dispatch tests cover both branches on any CPU by pretending the feature away."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import geolatent
from geolatent.model import attention_kernel as ak
from geolatent.model.precision import set_precision

# Stated tolerance of bf16 attention against the fp32 kernel on the same bf16 inputs
# (unit-variance q, k, v): the output is rounded to bf16 (step 2^-8 relative) and the
# probabilities to bf16 for P V, so per row cosine >= 0.9999 and max |difference| <= 2e-2.
MIN_COSINE, MAX_ABS = 0.9999, 2e-2


@pytest.fixture(scope="module")
def bf16_kernel():
    if ak.requested_backend() == "sdpa":
        pytest.skip("GEOLATENT_ATTENTION=sdpa: the kernel is switched off")
    if "avx512_bf16" not in ak.supported_isas():
        pytest.skip("this CPU has no AVX512_BF16 (+ AVX-512 BW): the bf16 kernel cannot run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOLATENT_ATTENTION_ISA", "avx512_bf16")
        try:
            ak._load()
        except ak.KernelUnavailable as exc:
            pytest.skip(f"attention kernel unavailable here: {exc}")
        yield ak


def bf16_rand(*shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).bfloat16()


def fp32_on_same_inputs(q, k, v, key_valid=None):
    with torch.no_grad():
        return ak.attention(q.float(), k.float(), v.float(), key_valid)


def assert_within_tolerance(out, exact, rows=None):
    assert out.dtype == torch.bfloat16 and out.is_contiguous()
    a, b = out.float().flatten(0, -2), exact.flatten(0, -2)
    if rows is not None:
        a, b = a[rows.flatten()], b[rows.flatten()]
    cos = F.cosine_similarity(a, b, dim=-1)
    assert cos.min().item() >= MIN_COSINE, cos.min().item()
    assert (a - b).abs().max().item() <= MAX_ABS


@pytest.mark.parametrize("d", [16, 32, 48, 64])
@pytest.mark.parametrize("nq,nk", [(1, 1), (7, 5), (130, 129), (600, 2100)])
def test_matches_fp32_kernel_within_tolerance(bf16_kernel, d, nq, nk):
    q, k, v = bf16_rand(2, nq, 3, d, seed=1), bf16_rand(2, nk, 3, d, seed=2), bf16_rand(
        2, nk, 3, d, seed=3
    )
    with torch.no_grad():
        out = bf16_kernel.attention(q, k, v)
    assert out.shape == (2, nq, 3, d)
    assert_within_tolerance(out, fp32_on_same_inputs(q, k, v))


def test_long_rows_and_peaked_scores(bf16_kernel):
    """12,288 keys (issue-2 shapes) and scores of hundreds (online maximum, rescaling)."""
    q, k, v = bf16_rand(1, 200, 2, 16, seed=4), bf16_rand(1, 12288, 2, 16, seed=5), bf16_rand(
        1, 12288, 2, 16, seed=6
    )
    with torch.no_grad():
        assert_within_tolerance(bf16_kernel.attention(q, k, v), fp32_on_same_inputs(q, k, v))
        q8, k8 = (q.float() * 8).bfloat16(), (k.float() * 8).bfloat16()
        out = bf16_kernel.attention(q8, k8, v)
    assert torch.isfinite(out.float()).all()
    assert_within_tolerance(out, fp32_on_same_inputs(q8, k8, v))


def test_key_padding_mask_and_rows_without_keys(bf16_kernel):
    b, nq, nk, h, d = 3, 50, 200, 4, 32
    q, k, v = bf16_rand(b, nq, h, d, seed=10), bf16_rand(b, nk, h, d, seed=11), bf16_rand(
        b, nk, h, d, seed=12
    )
    valid = torch.rand(b, nk, generator=torch.Generator().manual_seed(13)) > 0.4
    valid[2] = False  # a sample with no valid key at all
    with torch.no_grad():
        out = bf16_kernel.attention(q, k, v, valid)
    assert (out[2] == 0).all()
    keep = valid.any(dim=1)[:, None, None].expand(b, nq, h)
    assert_within_tolerance(out, fp32_on_same_inputs(q, k, v, valid), rows=keep)
    k2, v2 = k.clone(), v.clone()
    k2[~valid], v2[~valid] = 1e6, -1e6  # masked keys have no influence at all
    with torch.no_grad():
        assert torch.equal(bf16_kernel.attention(q, k2, v2, valid), out)


def test_strided_views_are_read_in_place(bf16_kernel):
    qkv = bf16_rand(2, 97, 3, 4, 16, seed=14)  # the model's [B, N, 3, H, d] layout
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    with torch.no_grad():
        out = bf16_kernel.attention(q, k, v)
        assert torch.equal(out, bf16_kernel.attention(q.contiguous(), k.contiguous(),
                                                           v.contiguous()))  # fmt: skip
    assert_within_tolerance(out, fp32_on_same_inputs(q, k, v))


def test_rejects_what_it_cannot_compute(bf16_kernel):
    q = torch.zeros(1, 4, 2, 16, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="all three alike"):
        bf16_kernel.attention(q, q.float(), q)
    with pytest.raises(ValueError, match="head width 8"):
        z = torch.zeros(1, 4, 2, 8, dtype=torch.bfloat16)
        bf16_kernel.attention(z, z, z)


@pytest.mark.slow
def test_memory_bounded_at_12288_tokens(bf16_kernel):
    """12,288 tokens, 2 heads: peak memory far below one N x N fp32 score matrix (604 MB)."""
    code = textwrap.dedent("""
        import resource, torch
        from geolatent.model import attention_kernel as ak
        q, k, v = (torch.randn(1, 12288, 2, 16).bfloat16() for _ in range(3))
        with torch.no_grad():
            ak.attention(q[:, :64], k, v)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out = ak.attention(q, k, v)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert ak.kernel_isa() == "avx512_bf16" and out.dtype == torch.bfloat16
        print((after - before) / 1024)
    """)
    env = {**os.environ, "GEOLATENT_ATTENTION_ISA": "avx512_bf16"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    grown_mb = float(proc.stdout.strip().splitlines()[-1])
    assert grown_mb < 50, f"peak memory grew {grown_mb:.0f} MB: an N x N matrix?"


def _bf16_nano_block() -> torch.nn.Module:
    """The first block of a random Nano encoder (width 128, 8 heads of 16) converted to bf16."""
    torch.manual_seed(0)
    enc = geolatent.build_model("nano").encoder.eval()
    set_precision(enc, "bf16")
    return enc.blocks[0]


def test_bf16_encoder_takes_the_bf16_kernel_only_where_the_variant_has_it(monkeypatch):
    """avx512_bf16 chosen: the bf16 kernel; another variant forced: the fp32 kernel on upcast
    q, k, v (never an error); both agree within the stated tolerance."""
    try:
        ak._load()
    except ak.KernelUnavailable as exc:
        pytest.skip(f"attention kernel unavailable here: {exc}")
    if ak.requested_backend() == "sdpa":
        pytest.skip("GEOLATENT_ATTENTION=sdpa: the kernel is switched off")
    calls: list[str] = []
    real = ak.attention
    monkeypatch.setattr(ak, "attention", lambda q, *a: calls.append(q.dtype) or real(q, *a))
    block = _bf16_nano_block()
    x = torch.randn(1, 300, 128)
    outs = {}
    for isa in ak.supported_isas():
        monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", isa)
        calls.clear()
        with torch.no_grad():
            outs[isa] = block(x).float()
        want = torch.bfloat16 if isa == "avx512_bf16" else torch.float32  # else: upcast
        assert calls == [want], (isa, calls)
    ref = outs[ak.supported_isas()[-1]]
    for out in outs.values():
        cos = F.cosine_similarity(out.flatten(0, -2), ref.flatten(0, -2), dim=-1)
        assert cos.min().item() >= MIN_COSINE


def test_dispatch_without_avx512_bf16(monkeypatch):
    """A CPU without AVX512_BF16: auto picks avx512, forcing avx512_bf16 names the feature, and
    bf16 inputs are refused with what to do instead."""
    monkeypatch.setattr(ak, "cpu_has", lambda *f: "avx512_bf16" not in f)
    monkeypatch.setattr(ak.platform, "machine", lambda: "x86_64")
    assert "avx512_bf16" not in ak.supported_isas()
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "auto")
    assert ak._choose_isa() == "avx512"
    with torch.no_grad():
        assert not ak.can_use(torch.zeros(1, 4, 2, 16, dtype=torch.bfloat16))
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "avx512_bf16")
    with pytest.raises(ak.KernelUnavailable, match="lacks AVX512_BF16"):
        ak._choose_isa()


def test_bf16_inputs_refused_by_another_variant(monkeypatch):
    if "avx512" not in ak.supported_isas():
        pytest.skip("this CPU has no AVX-512 variant to force")
    monkeypatch.setenv("GEOLATENT_ATTENTION_ISA", "avx512")
    q = torch.zeros(1, 4, 2, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        assert not ak.can_use(q)
        with pytest.raises(ak.KernelUnavailable, match="needs the avx512_bf16 kernel variant"):
            ak.attention(q, q, q)


def test_auto_falls_back_when_the_bf16_variant_does_not_build(tmp_path):
    """A compiler without -mavx512bf16 (older gcc): auto warns and runs the avx512 variant, so
    fp32 attention keeps its kernel and bf16 attention upcasts to it."""
    if "avx512_bf16" not in ak.supported_isas():
        pytest.skip("this CPU has no AVX512_BF16: auto never tries the bf16 variant")
    cc = tmp_path / "old-cc"
    cc.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -mavx512bf16 ] && '
                  '{ echo "unrecognized option $a" >&2; exit 1; }; done\n'
                  f'exec {os.environ.get("CC", "cc")} "$@"\n')  # fmt: skip
    cc.chmod(0o755)
    code = textwrap.dedent("""
        import torch
        from geolatent.model import attention_kernel as ak
        q = torch.randn(1, 40, 2, 16)
        with torch.no_grad():
            ak.attention(q, q, q)
            print(ak.kernel_isa(), ak.can_use(q.bfloat16()))
    """)
    env = {**os.environ, "GEOLATENT_CACHE_DIR": str(tmp_path / "cache"), "CC": str(cc),
           "GEOLATENT_ATTENTION_ISA": "auto", "GEOLATENT_ATTENTION": "auto"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["avx512", "False"]
    assert "variant avx512_bf16 unavailable" in proc.stderr
    assert "unrecognized option -mavx512bf16" in proc.stderr
