"""geolatent vs the reference implementation, same machine, same weights, same inputs.

The reference (``olmoearth-pretrain`` on PyPI) is never a dependency of geolatent; install it in a
separate virtual environment together with geolatent's core requirements and run this script
there with geolatent on ``PYTHONPATH``::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 numpy einops safetensors pydantic \
        universal-pathlib huggingface_hub
    /tmp/refvenv/bin/pip install --no-deps olmoearth-pretrain
    PYTHONPATH=. /tmp/refvenv/bin/python benchmarks/compare_reference.py \
        --checkpoint ../shared/fixtures/olmoearth_v1_nano

It builds both models from the same v1 release folder, checks that their inference-pass tokens
agree, then times them alternately (median of ``--repeats``) and prints tokens/s and the ratio.
Shapes: 64x64 px, T=12, Sentinel-2 L2A + Sentinel-1, p=4 (12,288 tokens per sample).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

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


def run_reference(encoder, x: dict, ts: torch.Tensor, p: int) -> dict:
    from olmoearth_pretrain.datatypes import MaskedOlmoEarthSample

    kwargs = {"timestamps": ts}
    for m, v in x.items():
        s = geolatent.MODALITIES[m].num_bandsets
        kwargs[m] = v
        kwargs[f"{m}_mask"] = torch.zeros(*v.shape[:4], s)
    out = encoder(MaskedOlmoEarthSample(**kwargs), patch_size=p, fast_pass=True)
    tm = out["tokens_and_masks"]
    return {m: getattr(tm, m) for m in x}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a v1 release folder")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--timesteps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ours = geolatent.load_model(args.checkpoint).encoder
    ref = reference_encoder(args.checkpoint)
    b, t, p = args.batch, args.timesteps, 4
    g = torch.Generator().manual_seed(0)
    x = {
        "sentinel2_l2a": torch.rand(b, 64, 64, t, 12, generator=g),
        "sentinel1": torch.rand(b, 64, 64, t, 2, generator=g),
    }
    ts = torch.tensor([[[1, i % 12, 2024] for i in range(t)]] * b)
    with torch.inference_mode():
        a = ours(x, ts, p).tokens
        r = run_reference(ref, x, ts, p)
        diff = max((a[m] - r[m]).abs().max().item() for m in x)
        print(f"max |geolatent - reference| over all tokens: {diff:.2e}")
        times = {"geolatent": [], "reference": []}
        for _ in range(args.repeats):
            for name, fn in (("geolatent", lambda: ours(x, ts, p)),
                             ("reference", lambda: run_reference(ref, x, ts, p))):  # fmt: skip
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    tokens = b * t * 256 * 4
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for k, s in med.items():
        print(f"{k:10s}: {s:.2f} s/pass, {tokens / s:,.0f} tokens/s")
    print(f"ratio geolatent / reference: {med['reference'] / med['geolatent']:.2f}x")


if __name__ == "__main__":
    main()
