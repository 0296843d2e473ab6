"""Reduced-precision inference (geolatent.model.precision): accuracy against fp32 on the fixture
cases, what each precision needs from the CPU, memory bounds, and that fp32 stays exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import geolatent
from geolatent.model import precision as P
from geolatent.runtime import cpu_has

# Token cosine floors against fp32 (docs/precision.md). Measured minima on the fixture cases and
# the real eo-learn scenes: bf16 0.99995; int8 0.99989 with 8-bit activations (CPUs with VNNI),
# 0.99966 with PyTorch's default 7-bit activations (fbgemm on AVX2 without VNNI).
MIN_COSINE = {"bf16": 0.9999, "int8": 0.9998 if P._full_range_activations() else 0.999}
needs_bf16 = pytest.mark.skipif(not (cpu_has("avx512_bf16") or cpu_has("amx_bf16")),
                                reason="this CPU has no bf16 units")  # fmt: skip
needs_int8 = pytest.mark.skipif(P._int8_engine() is None, reason="no int8 engine on this CPU")


def _available(name: str) -> bool:
    try:
        P.resolve_precision(name)
    except P.PrecisionError:
        return False
    return True


@pytest.fixture(scope="module")
def cases(fixture_dir):
    return json.loads((fixture_dir / "cases.json").read_text()), load_file(
        str(fixture_dir / "cases.safetensors")
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_tokens_match_fp32_on_every_fixture_case(nano_fixture_model, cases, name):
    if not _available(name):
        pytest.skip(f"{name} is not supported on this CPU")
    meta, t = cases
    for case in meta["encoder_cases"]:
        n, p = case["case"], case["patch_size"]
        inputs = {m: t[f"{n}/input/{m}"] for m in case["modalities"]}
        e = nano_fixture_model.embed(inputs, timestamps=t[f"{n}/input/timestamps"], patch_size=p,
                                     normalize=False, precision=name)  # fmt: skip
        for m in inputs:
            got, ref = e.tokens[m], t[f"{n}/tokens/{m}"]
            assert got.dtype == torch.float32
            got, ref = got.flatten(0, -2), ref.flatten(0, -2)
            encoded = ref.norm(dim=-1) > 0
            assert torch.equal(got[~encoded], ref[~encoded])  # not-encoded tokens stay exact 0
            cos = F.cosine_similarity(got[encoded], ref[encoded], dim=-1)
            assert cos.min() >= MIN_COSINE[name], (n, m, cos.min().item())
            assert cos.median() >= 0.9999 if name == "bf16" else cos.median() >= 0.9995


def test_embed_at_another_precision_leaves_the_model_exact(nano_fixture_model, cases):
    name = next((n for n in ("bf16", "int8") if _available(n)), None)
    if name is None:
        pytest.skip("neither bf16 nor int8 runs here")
    meta, t = cases
    case = meta["encoder_cases"][1]
    n, p = case["case"], case["patch_size"]
    inputs = {m: t[f"{n}/input/{m}"] for m in case["modalities"]}
    ts = t[f"{n}/input/timestamps"]
    nano_fixture_model.embed(inputs, timestamps=ts, patch_size=p, normalize=False, precision=name)
    assert P.current_precision(nano_fixture_model) == "fp32"
    assert all(q.dtype == torch.float32 for q in nano_fixture_model.parameters())
    exact = nano_fixture_model.embed(inputs, timestamps=ts, patch_size=p, normalize=False)
    for m in inputs:
        torch.testing.assert_close(exact.tokens[m], t[f"{n}/tokens/{m}"], atol=1e-5, rtol=1e-5)


def test_converted_copy_follows_weight_updates():
    model = geolatent.build_model("nano").eval()
    name = next((n for n in ("bf16", "int8") if _available(n)), None)
    if name is None:
        pytest.skip("neither bf16 nor int8 runs here")
    first, _ = P.encoder_at(model, name)
    assert P.encoder_at(model, name)[0] is first  # cached
    with torch.no_grad():
        model.encoder.norm.weight.mul_(2.0)  # an in-place update, as an optimizer step
    assert P.encoder_at(model, name)[0] is not first


@needs_bf16
def test_load_model_in_bf16(fixture_dir, tmp_path):
    model = geolatent.load_model(fixture_dir, precision="bf16")
    assert P.current_precision(model) == "bf16"
    assert model.encoder.blocks[0].attn.q.weight.dtype == torch.bfloat16
    assert model.encoder.patch_embeddings.parameters().__next__().dtype == torch.float32
    with pytest.raises(P.PrecisionError, match="loaded in bf16"):
        P.encoder_at(model, "int8")
    with pytest.raises(ValueError, match="save the fp32 model"):
        geolatent.save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_int8
def test_int8_linears_are_quantized(fixture_dir):
    model = geolatent.load_model(fixture_dir, precision="int8")
    blk = model.encoder.blocks[0]
    assert isinstance(blk, P.Int8Block)
    assert blk.qkv.weight().dtype == torch.qint8 and blk.fc2.weight().dtype == torch.qint8


@needs_int8
def test_int8_activations_use_all_8_bits_where_the_cpu_has_vnni():
    """VNNI / AMX-INT8 CPUs sum u8 x s8 products in 32 bits: 8-bit activations, a smaller error
    than PyTorch's 7-bit default (kept where fbgemm's int16 sums could saturate)."""
    has_vnni = any(cpu_has(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    assert P._full_range_activations() == (has_vnni and P._int8_engine() != "qnnpack")
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    x = torch.randn(500, 256)
    with torch.no_grad():
        ref = lin(x)
        errs = {fr: ((P.Int8Linear(lin, fr)(x) - ref).norm() / ref.norm()).item()
                for fr in (False, True)}  # fmt: skip
    assert errs[False] < 0.04  # 7 bits: still a close linear (measured 0.020)
    if has_vnni:
        assert errs[True] < 0.7 * errs[False], errs
        # no int16 saturation at the extremes (all activations 255, all weights 127)
        ones = torch.nn.Linear(256, 8)
        with torch.no_grad():
            ones.weight.fill_(1.0)
            ones.bias.zero_()
            assert P.Int8Linear(ones, True)(torch.ones(4, 256))[0, 0].item() == pytest.approx(
                256, rel=0.01
            )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_tokens_match_fp32_on_real_scenes(nano_fixture_model, real_data, name):
    """The real eo-learn scenes (Slovenia, Sentinel-2, 96 x 96 px, T=5, p=4): the same floors."""
    import numpy as np

    if not _available(name):
        pytest.skip(f"{name} is not supported on this CPU")
    scenes = np.load(real_data / "eolearn" / "REFERENCE_SCENES.npy")  # [5, 101, 100, 13]
    keep = [i for i in range(13) if i != 10]  # B10 (cirrus) is not a model band
    dates = ["2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11"]
    order = sorted(range(5), key=dates.__getitem__)  # the model takes increasing dates
    s2 = torch.from_numpy(scenes[order][:, :96, :96, keep] * 10000.0).float()
    s2 = s2.permute(1, 2, 0, 3)[None]  # [1, H, W, T, bands]
    dates = sorted(dates)
    x = {"sentinel2_l2a": s2}
    ref = nano_fixture_model.embed(x, timestamps=dates, patch_size=4).tokens["sentinel2_l2a"]
    got = nano_fixture_model.embed(x, timestamps=dates, patch_size=4, precision=name)
    a, b = got.tokens["sentinel2_l2a"].flatten(0, -2), ref.flatten(0, -2)
    encoded = b.norm(dim=-1) > 0
    assert encoded.sum() > 1000
    cos = F.cosine_similarity(a[encoded], b[encoded], dim=-1)
    assert cos.min() >= MIN_COSINE[name], cos.min().item()


def test_unsupported_requests_name_the_missing_feature(monkeypatch):
    with pytest.raises(P.PrecisionError, match="--precision 'fp16': expected one of"):
        P.resolve_precision("fp16", option="--precision")
    monkeypatch.setattr(P, "cpu_has", lambda *f: f in (("avx2",),))  # AVX2 only, no bf16
    with pytest.raises(P.PrecisionError, match="AMX-BF16 or AVX512_BF16") as err:
        P.resolve_precision("bf16", option="--precision")
    assert "--precision int8" in str(err.value)
    if P._int8_engine() is not None:
        assert P.resolve_precision("auto").name == "int8"
    monkeypatch.setattr(P, "cpu_has", lambda *f: False)  # neither AVX2 nor bf16
    if P.cpu_info().arch in ("x86_64", "amd64"):
        with pytest.raises(P.PrecisionError, match="needs a CPU with AVX2"):
            P.resolve_precision("int8")
        assert P.resolve_precision("auto").name == "fp32"
    with pytest.raises(P.PrecisionError, match="int8 is a CPU path"):
        P.resolve_precision("int8", device="cuda")
    assert P.resolve_precision("auto", device="cuda").name == "bf16"


def test_auto_says_what_it_picked():
    r = P.resolve_precision("auto")
    assert r.name in ("bf16", "int8", "fp32") and r.reason.startswith("auto:")
    if cpu_has("avx512_bf16") or cpu_has("amx_bf16"):
        assert r.name == "bf16" and "BF16" in r.reason


@pytest.mark.slow
@needs_bf16
@pytest.mark.parametrize("backend", ["kernel", "sdpa"])
def test_bf16_attention_is_memory_bounded_at_12288_tokens(backend):
    """One bf16 block at 12,288 tokens: peak memory far below one N x N score matrix (302 MB
    per head in bf16)."""
    code = textwrap.dedent("""
        import resource, torch
        from geolatent.model.attention import Block
        from geolatent.model.precision import set_precision
        torch.manual_seed(0)
        enc = torch.nn.Module()
        enc.blocks = torch.nn.ModuleList([Block(32, 2)])
        enc.norm = torch.nn.LayerNorm(32)
        enc.eval()
        set_precision(enc, "bf16")
        x = torch.randn(1, 12288, 32)
        with torch.no_grad():
            enc.blocks[0](x)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            y = enc.blocks[0](x)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
        print((after - before) / 1024)
    """)
    env = {**os.environ, "GEOLATENT_ATTENTION": backend}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    grown_mb = float(proc.stdout.strip().splitlines()[-1])
    assert grown_mb < 100, f"peak memory grew {grown_mb:.0f} MB: an N x N matrix?"


def test_cli_precision_errors_name_the_flag(tmp_path):
    from typer.testing import CliRunner

    from geolatent.cli import app

    tif = tmp_path / "s2.tif"
    tif.write_bytes(b"")
    res = CliRunner().invoke(app, ["embed", "-o", str(tmp_path / "o.tif"), "--s2", str(tif),
                                   "--random-weights", "nano", "--precision", "fp16"])  # fmt: skip
    text = " ".join(res.output.split())
    assert res.exit_code == 2
    assert "--precision 'fp16': expected one of fp32, bf16, int8, auto" in text


@pytest.mark.parametrize("name", ["bf16", "int8"])
@pytest.mark.parametrize("folder", ["olmoearth_v1_2_nano", "olmoearth_v1_3_mini"])
def test_reduced_precision_with_rope_versions(fixture_dir, folder, name):
    """v1.2+ (3-D RoPE in every block, v1.3's pooler): the converted blocks rotate q and k too."""
    if not _available(name):
        pytest.skip(f"{name} is not supported on this CPU")
    root = fixture_dir.parent / folder
    if not (root / "weights.pth").exists():
        pytest.skip(f"fixture {root} not found (set GEOLATENT_SHARED)")
    meta = json.loads((root / "cases.json").read_text())
    t = load_file(str(root / "cases.safetensors"))
    model = geolatent.load_model(root)
    for case in meta["encoder_cases"]:
        if case["input_kind"] != "normalized":
            continue
        n, p = case["case"], case["patch_size"]
        inputs = {m: t[f"{n}/input/{m}"] for m in case["modalities"]}
        e = model.embed(inputs, timestamps=t[f"{n}/input/timestamps"], patch_size=p,
                        normalize=False, precision=name)  # fmt: skip
        for m in inputs:
            got, ref = e.tokens[m].flatten(0, -2), t[f"{n}/tokens/{m}"].flatten(0, -2)
            cos = F.cosine_similarity(got, ref, dim=-1)
            assert cos.min() > MIN_COSINE[name], (n, m, float(cos.min()))
