"""The end-to-end demo: built-in sample scene -> GeoTIFFs -> embedding COG -> PCA preview."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from geolatent.data.synthetic import CLASS_COLORS, make_sample_scene, write_scene_geotiffs
from geolatent.inference.embed_rasters import EmbedResult, ProgressCallback, embed_geotiffs
from geolatent.inference.file_inputs import RasterInput
from geolatent.inference.preview import (
    pca_rgb,
    position_variance_share,
    true_colour,
    upscale,
    write_png,
)
from geolatent.modalities import MODALITIES

RANDOM_WEIGHTS_NOTE = "random weights (no checkpoint given)"
DEMO_RELEASE = "allenai/OlmoEarth-v1_2-Nano"
"""The released weights the demo uses when they are cached or the hub is reachable."""


def released_demo_model():
    """``(model, weights note, None)`` with the released Nano weights when they are in the
    Hugging Face cache or the hub is reachable, else ``(None, RANDOM_WEIGHTS_NOTE, reason)``."""
    from geolatent.model import hub

    try:
        model = hub.load_release(DEMO_RELEASE, local_only=True)
    except hub.ModelNotAvailable:
        if not hub.endpoint_reachable():
            return None, RANDOM_WEIGHTS_NOTE, (
                f"the released weights {DEMO_RELEASE} are not cached and the Hugging Face hub "
                "is not reachable"
            )  # fmt: skip
        try:
            model = hub.load_release(DEMO_RELEASE)
        except hub.ModelNotAvailable as e:
            return None, RANDOM_WEIGHTS_NOTE, str(e)
    prov = model.provenance
    return model, f"released weights {DEMO_RELEASE} @ {prov['revision']}", None


def random_model(size: str = "nano", seed: int = 0):
    """A model with random weights, reproducible by ``seed`` (global RNG state is untouched).

    Only for demos and tests: embeddings of an untrained model carry no learned meaning.
    """
    from geolatent.model import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(size)


@dataclass(frozen=True)
class DemoResult:
    """Paths and figures of a demo run."""

    scene_dir: Path
    embedding_path: Path
    preview_path: Path
    labels_preview_path: Path
    overview_path: Path
    note: str
    scene_shape: tuple[int, int, int]  # (H, W, T)
    embedding: EmbedResult
    weights: str
    seconds: float


def run_demo(
    out_dir: str | os.PathLike,
    model=None,
    weights: str = RANDOM_WEIGHTS_NOTE,
    *,
    size: int = 64,
    timesteps: int = 12,
    seed: int = 0,
    patch_size: int = 4,
    device: str | None = None,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Generate the sample scene, write its GeoTIFFs, embed them and write previews.

    Args:
        out_dir: output folder: ``scene/`` (input GeoTIFFs and ``labels.tif``),
            ``embedding.tif`` (COG, D float32 bands at ``10*p`` m), ``embedding_pca.png`` (first
            three principal components as RGB) and ``labels.png`` (the class map).
        model: the model to use; None builds a random-weight Nano model (seeded).
        weights: a description of the weights for the output tags and the summary.
        size: scene side in 10 m pixels; timesteps: monthly timesteps; seed: scene seed.
        patch_size: p; device: where to run the model.
        progress: optional ``(tiles_done, tiles_total)`` callback.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model, weights = random_model("nano", seed=0), RANDOM_WEIGHTS_NOTE

    scene = make_sample_scene(size, size, timesteps, seed=seed)
    files = write_scene_geotiffs(scene, out / "scene")
    inputs = {
        m: [RasterInput(path, date) for path, date in zip(files[m], scene.dates, strict=True)]
        for m in ("sentinel2_l2a", "sentinel1")
    }
    result = embed_geotiffs(
        model, inputs, out / "embedding.tif", patch_size=patch_size, device=device,
        progress=progress,
        tags={"weights": weights, "source": "geolatent built-in sample scene"},
    )  # fmt: skip

    with rasterio.open(result.path) as src:
        features = np.moveaxis(src.read(), 0, -1)  # small: the demo scene is tiny
    factor = max(1, 256 // max(features.shape[:2]))
    preview = write_png(out / "embedding_pca.png", upscale(pca_rgb(features), factor))
    palette = np.array(CLASS_COLORS, dtype=np.uint8)
    label_factor = max(1, 256 // size)
    labels_png = write_png(out / "labels.png", upscale(palette[scene.labels], label_factor))
    share = position_variance_share(features)
    note = (f"pixel position explains {share:.0%} of the embedding variance")
    if weights == RANDOM_WEIGHTS_NOTE:
        note = (f"random weights give position-dominated embeddings ({note}): the PCA picture "
                "shows the token grid, not the scene; pass a checkpoint for meaningful ones")
    rgb = true_colour(scene.modalities["sentinel2_l2a"], MODALITIES["sentinel2_l2a"].bands)
    overview = write_overview(out / "overview.png", rgb, pca_rgb(features),
                              palette[scene.labels], note, weights)
    return DemoResult(
        scene_dir=out / "scene",
        embedding_path=result.path,
        preview_path=preview,
        labels_preview_path=labels_png,
        overview_path=overview,
        note=note,
        scene_shape=(scene.height, scene.width, scene.num_timesteps),
        embedding=result,
        weights=weights,
        seconds=time.perf_counter() - start,
    )


def write_overview(path: Path, rgb: np.ndarray, pca: np.ndarray, labels_rgb: np.ndarray,
                   note: str, weights: str) -> Path:
    """One picture to check the pipeline by eye: the input (true colour), the embedding (PCA
    1-3 as RGB) and the scene's classes side by side, titled with ``note``.

    ``rgb``, ``pca``, ``labels_rgb``: uint8 ``[H, W, 3]`` (the embedding at ``H/p``)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.6))
    panels = ((rgb, "input: Sentinel-2 true colour (median)"),
              (pca, "embedding: PCA 1-3 as RGB"), (labels_rgb, "scene classes"))
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    title = f"geolatent demo ({weights})\n{note}"
    fig.suptitle(title, fontsize=10, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.86))  # room for the two-line title
    fig.savefig(path, dpi=80, metadata={"Title": title})
    plt.close(fig)
    return Path(path)
