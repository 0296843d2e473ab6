"""What bf16 and int8 inference cost in accuracy, against fp32 (the figures of docs/precision.md).

1. Token cosine similarity to fp32 (min, median over encoded tokens) on the four fixture encoder
   cases and on the real eo-learn scenes (Slovenia, 5 Sentinel-2 dates, 96 x 96 px, p=4).
2. The real-data eval suite (configs/evals/realdata.yaml: kNN and linear probe, 3 seeds) for
   the fixture checkpoint at each precision: primary metric and its change vs fp32.
3. An area prediction: a segmentation head fine-tuned (fp32) on the northern eo-learn rows,
   the southern rows predicted at each precision: pixel agreement with the fp32 map, and the
   held-out accuracy against the reference LULC raster (the flow of
   tests/platform/test_eolearn_real.py, whose helpers it reuses).

The fixture weights are random (no released weights can be downloaded here), so metrics are
those of a random-weight encoder; the differences between precisions are what is measured.

    PYTHONPATH=. python benchmarks/precision_accuracy.py [--skip-suite] [--skip-area]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import geolatent
from geolatent.model.precision import resolve_precision

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NANO = SHARED / "fixtures" / "olmoearth_v1_nano"
EOLEARN = SHARED / "data" / "real" / "eolearn"
PRECISIONS = ("fp32", "bf16", "int8")


def cosine_stats(got: dict, ref: dict) -> tuple[float, float]:
    cos = []
    for m in ref:
        a, b = got[m].flatten(0, -2).float(), ref[m].flatten(0, -2).float()
        keep = b.norm(dim=-1) > 0
        cos.append(F.cosine_similarity(a[keep], b[keep], dim=-1))
    c = torch.cat(cos)
    return c.min().item(), c.median().item()


def token_similarity(model) -> None:
    meta = json.loads((NANO / "cases.json").read_text())
    t = load_file(str(NANO / "cases.safetensors"))
    scenes = np.load(EOLEARN / "REFERENCE_SCENES.npy")  # [5, 101, 100, 13] reflectance
    keep = [i for i in range(13) if i != 10]  # B10 (cirrus) is not a model band
    dates = ["2015-08-20", "2015-07-31", "2015-09-09", "2015-08-30", "2015-07-11"]
    order = sorted(range(len(dates)), key=dates.__getitem__)  # the model takes increasing dates
    s2 = torch.from_numpy(scenes[order][:, :96, :96, keep] * 10000.0).permute(1, 2, 0, 3)[None]
    dates = sorted(dates)
    print("| inputs | precision | token cosine min | median |\n|---|---|---|---|")
    rows = []
    for case in meta["encoder_cases"]:
        n, p = case["case"], case["patch_size"]
        inputs = {m: t[f"{n}/input/{m}"] for m in case["modalities"]}
        ref = {m: t[f"{n}/tokens/{m}"] for m in inputs}
        rows.append((f"fixture {n}", inputs, t[f"{n}/input/timestamps"], p, False, ref))
    real = model.embed({"sentinel2_l2a": s2}, timestamps=dates, patch_size=4).tokens
    rows.append(("eo-learn scenes 96x96 T=5", {"sentinel2_l2a": s2}, dates, 4, True, real))
    for label, inputs, ts, p, norm, ref in rows:
        for prec in PRECISIONS[1:]:
            e = model.embed(inputs, timestamps=ts, patch_size=p, normalize=norm, precision=prec)
            lo, med = cosine_stats(e.tokens, ref)
            print(f"| {label} | {prec} | {lo:.5f} | {med:.5f} |")


def eval_suite(tmp: Path, seeds: int | None, tasks: list[str] | None, cache: Path) -> None:
    base = yaml.safe_load((REPO / "configs/evals/realdata.yaml").read_text())
    if tasks:
        base["tasks"] = [t for t in base["tasks"] if t["name"] in tasks]
    scores: dict[str, dict] = {}
    for prec in PRECISIONS:
        suite = {
            "name": f"realdata-{prec}", "seeds": seeds or base.get("seeds", 3),
            "models": {"fixture-v1-nano": {"checkpoint": str(NANO)}},
            "tasks": [{**t, "root": str((REPO / t["root"]).resolve())} for t in base["tasks"]],
            "protocols": base["protocols"], "settings": {"precision": prec},
        }  # fmt: skip
        from geolatent.evals.runner import run_suite

        res = run_suite(suite, out_dir=tmp / f"suite-{prec}", cache=str(cache), progress=False)
        for r in res.results:
            key = f"{r.task} {r.protocol} ({r.primary_metric})"
            scores.setdefault(key, {})[prec] = r.metrics[r.primary_metric].mean
    print("\n| task, protocol (metric) | fp32 | bf16 (change) | int8 (change) |\n|---|---|---|---|")
    for key, s in scores.items():
        cells = [f"{s['fp32']:.4f}"] + [
            f"{s[p]:.4f} ({s[p] - s['fp32']:+.4f})" for p in PRECISIONS[1:] if p in s
        ]
        print(f"| {key} | {' | '.join(cells)} |")


def area_prediction(tmp: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "platform"))
    import shapely
    import test_eolearn_real as T

    from geolatent.data.window import WGS84, reproject_geometry
    from geolatent.platform.config import FinetuneConfig
    from geolatent.platform.finetune import finetune
    from geolatent.platform.predict import predict_area

    T._write_scenes(EOLEARN, tmp / "s2")
    names = T._training_polygons(EOLEARN, tmp / "train_labels.gpkg")
    cfg = FinetuneConfig.model_validate(dict(
        task="segmentation", encoder=str(NANO),
        labels=dict(path=str(tmp / "train_labels.gpkg"), field="LULC_ID", ignore_values=[0],
                    class_names={str(k): v for k, v in names.items()}),
        sources=[dict(name="s2_l1c", type="files", modality="sentinel2_l2a",
                      paths=[str(tmp / "s2" / "s2_*.tif")],
                      bands=[b for b in T.BANDS if b != "B10"],
                      date_pattern=r"s2_(\d{4}-\d{2}-\d{2})\.tif", date_format="%Y-%m-%d")],
        windows=dict(size_px=16, start="2015-07-01", end="2015-10-01"),
        split=dict(cell_size_m=160, train=0.75, val=0.25, test=0.0, seed=0),
        train=dict(epochs=20, freeze_epochs=2, batch_size=4, patch_size=4, lr=1e-3,
                   head_hidden=32, class_weighting="sqrt"),
        output=str(tmp / "model"),
    ))  # fmt: skip
    bundle = finetune(cfg).bundle_path
    held = reproject_geometry(shapely.segmentize(T._rows_box(T.HELD_OUT_ROWS), 50), T.CRS, WGS84)
    (tmp / "rest.geojson").write_text(json.dumps(shapely.geometry.mapping(held)))
    lulc = np.load(EOLEARN / "TestEOPatch" / "mask_timeless" / "LULC.npy")[..., 0]
    maps, acc = {}, {}
    import rasterio

    for prec in PRECISIONS:
        out = predict_area(bundle, tmp / "rest.geojson", "2015-07-01", "2015-09-30",
                           tmp / f"rest-{prec}.tif", crs=T.CRS, precision=prec)  # fmt: skip
        with rasterio.open(out.path) as src:
            pred, inv = src.read(1), ~src.transform
            values = json.loads(src.tags()["class_values"])
        maps[prec] = pred
        rows, cols = np.mgrid[T.HELD_OUT_ROWS[0] : T.HELD_OUT_ROWS[1], 0:100]
        truth = lulc[rows, cols].ravel()
        x, y = T.TRANSFORM @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
        mc, mr = inv @ (x, y)
        mr, mc = np.floor(mr).astype(int), np.floor(mc).astype(int)
        ok = (mr >= 0) & (mr < pred.shape[0]) & (mc >= 0) & (mc < pred.shape[1]) & (truth != 0)
        index_of = {v: i for i, v in enumerate(values)}
        y_true = np.array([index_of.get(int(v), -1) for v in truth[ok]])
        acc[prec] = float((pred[mr[ok], mc[ok]] == y_true).mean())
        print(f"  {prec}: {out.compute['precision']}, {out.seconds:.1f} s, "
              f"energy estimate {out.compute['energy_kwh'] * 1000:.3f} Wh")  # fmt: skip
    print("\n| precision | held-out accuracy (change) | pixel agreement with fp32 |\n|---|---|---|")
    for prec in PRECISIONS:
        valid = maps["fp32"] != 255
        agree = float((maps[prec][valid] == maps["fp32"][valid]).mean())
        print(f"| {prec} | {acc[prec]:.4f} ({acc[prec] - acc['fp32']:+.4f}) | {agree:.4%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--skip-area", action="store_true")
    ap.add_argument("--skip-tokens", action="store_true")
    ap.add_argument("--seeds", type=int, help="suite seeds (default: the suite's)")
    ap.add_argument("--tasks", help="comma-separated suite tasks (default: all)")
    ap.add_argument("--cache", type=Path, help="embedding cache folder (default: temporary)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    for prec in PRECISIONS:
        print(f"{prec}: {resolve_precision(prec)}")
    if not args.skip_tokens:
        token_similarity(geolatent.load_model(NANO))
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_suite:
            tasks = args.tasks.split(",") if args.tasks else None
            eval_suite(Path(tmp), args.seeds, tasks, args.cache or Path(tmp) / "cache")
        if not args.skip_area:
            area_prediction(Path(tmp))


if __name__ == "__main__":
    main()
