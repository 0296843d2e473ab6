"""geolatent vs the reference implementation, same machine, same weights, same inputs.

The reference is never a dependency of geolatent; install it in a separate virtual environment
together with geolatent's core requirements and run this script there with geolatent on
``PYTHONPATH``.

v1 release folders use ``olmoearth-pretrain`` (PyPI)::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 numpy einops safetensors pydantic \
        universal-pathlib huggingface_hub
    /tmp/refvenv/bin/pip install --no-deps olmoearth-pretrain
    PYTHONPATH=. /tmp/refvenv/bin/python benchmarks/compare_reference.py \
        --checkpoint ../shared/fixtures/olmoearth_v1_nano

v1.1, v1.2 and v1.3 folders use ``olmoearth-pretrain-minimal`` (the package that made their
parity fixtures)::

    python3.11 -m venv /work/refvenv-min
    /work/refvenv-min/bin/pip install torch==2.13.0 && /work/refvenv-min/bin/pip install \
        olmoearth-pretrain-minimal   # plus geolatent's core requirements
    PYTHONPATH=. /work/refvenv-min/bin/python benchmarks/compare_reference.py \
        --checkpoint ../shared/fixtures/olmoearth_v1_2_nano

It builds both models from the same release folder, checks that their inference-pass outputs
agree (tokens; for v1.3 also the location tokens and the distilled embedding), then times them
alternately (median of ``--repeats``) and prints tokens/s and the ratio.
Shapes (issue 2): 64x64 px, T=12, Sentinel-2 L2A + Sentinel-1, p=4 (v1: 12,288 tokens per
sample, 3 + 1 bandsets; v1.1+: 6,144, one bandset per modality). v1.2+ get real dates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from encoder_bench_args import parse_encoder_timing_args

import geolatent


def reference_encoder(folder: Path):
    from olmoearth_pretrain.nn.latent_mim import LatentMIMConfig

    cfg = json.loads((folder / "config.json").read_text())["model"]
    model = LatentMIMConfig.from_dict(cfg).build()
    state = torch.load(folder / "weights.pth", map_location="cpu", weights_only=True)
    expected = model.state_dict()
    for k, v in state.items():
        # PyPI releases after v1 implement the 8x8 patch conv as a Linear over flattened
        # patches; the v1 conv weight [D, C, 8, 8] maps onto it as [D, 8*8*C] ((h w c) order).
        if v.ndim == 4 and expected[k].ndim == 2:
            state[k] = v.permute(0, 2, 3, 1).reshape(v.shape[0], -1)
    model.load_state_dict(state, strict=True)
    return model.eval().encoder


TRAINING_HEADS = ("supervision_head.", "location_token_distillation_head.")


def reference_encoder_minimal(folder: Path):
    """The olmoearth-pretrain-minimal encoder of a v1.1+ release folder (its own loader's steps:
    build from ``config["model"]``, drop the training-only heads, strict load, restrict inputs)."""
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.config import Config

    cfg = json.loads((folder / "config.json").read_text())["model"]
    model = Config.from_dict(cfg).build()
    state = torch.load(folder / "weights.pth", map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_HEADS)}
    model.load_state_dict(state, strict=True)
    model.encoder.restrict_input_modalities(["sentinel2_l2a", "sentinel1", "landsat"])
    return model.eval().encoder


def run_reference(encoder, x: dict, ts: torch.Tensor, p: int, minimal: bool = False,
                  bandsets: dict[str, int] | None = None) -> dict:  # fmt: skip
    if minimal:
        from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
            MaskedOlmoEarthSample,
        )
    else:
        from olmoearth_pretrain.datatypes import MaskedOlmoEarthSample

    kwargs = {"timestamps": ts}
    for m, v in x.items():
        s = (bandsets or {}).get(m, geolatent.MODALITIES[m].num_bandsets)
        kwargs[m] = v
        kwargs[f"{m}_mask"] = torch.zeros(*v.shape[:4], s)
    out = encoder(MaskedOlmoEarthSample(**kwargs), patch_size=p, fast_pass=True)
    tm = out["tokens_and_masks"]
    res = {m: getattr(tm, m) for m in x}
    if "location_tokens" in out:
        res["location_tokens"] = out["location_tokens"]
        if out.get("student_location_tokens") is not None:
            res["location_embedding"] = out["student_location_tokens"]
    return res


def run_ours(encoder, x: dict, ts: torch.Tensor, p: int) -> dict:
    out = encoder(x, ts, p)
    res = dict(out.tokens)
    if out.location_tokens is not None:
        res["location_tokens"] = out.location_tokens
        if out.location_embedding is not None:
            res["location_embedding"] = out.location_embedding
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a release folder (any version)")
    args = parse_encoder_timing_args(ap, batch=8)

    model = geolatent.load_model(args.checkpoint)
    version = model.config.version
    ours = model.encoder
    minimal = version != "v1"
    ref = reference_encoder_minimal(args.checkpoint) if minimal else reference_encoder(
        args.checkpoint)  # fmt: skip
    bandsets = {m: ours.modalities[m].num_bandsets for m in ("sentinel2_l2a", "sentinel1")}
    b, t, p = args.batch, args.timesteps, 4
    g = torch.Generator().manual_seed(0)
    x = {
        "sentinel2_l2a": torch.rand(b, 64, 64, t, 12, generator=g),
        "sentinel1": torch.rand(b, 64, 64, t, 2, generator=g),
    }
    # Real, increasing dates across a year boundary (v1.2+ use them as the time coordinate).
    dates = [(1 + (7 * i) % 27, (10 + i) % 12, 2023 + (10 + i) // 12) for i in range(t)]
    ts = torch.tensor([dates] * b)

    def ref_fn():
        return run_reference(ref, x, ts, p, minimal, bandsets)

    def ours_fn():
        return run_ours(ours, x, ts, p)

    with torch.inference_mode():
        a, r = ours_fn(), ref_fn()
        for k in a:
            d = (a[k] - r[k]).abs().max().item()
            ok = torch.allclose(a[k], r[k], atol=1e-4, rtol=1e-4)
            print(f"max |geolatent - reference| {k}: {d:.2e} ({'ok' if ok else 'MISMATCH'})")
        times = {"geolatent": [], "reference": []}
        for _ in range(args.repeats):
            for name, fn in (("geolatent", ours_fn), ("reference", ref_fn)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    tokens = b * t * 256 * sum(bandsets.values())
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"{version} {args.checkpoint.name}: batch {b}, {tokens // b:,} tokens per sample, "
          f"{args.threads} threads")  # fmt: skip
    for k, s in med.items():
        print(f"{k:10s}: {s:.2f} s/pass, {tokens / s:,.0f} tokens/s")
    print(f"ratio geolatent / reference: {med['reference'] / med['geolatent']:.2f}x")


if __name__ == "__main__":
    main()
