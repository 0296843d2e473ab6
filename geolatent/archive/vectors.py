"""What an archive stores for each location, decided from the model and the build's options.

Two kinds of vectors:

* **Patch vectors** (every model): the feature map, one vector per ``p x p`` patch
  (``10 * p`` m), the mean over time steps and bandsets of the encoder's tokens there. Reduced
  from the model's ``D`` dims to ``dims`` (128 or 64) by a PCA fitted on the build
  (:func:`geolatent.archive.build.fit_projection`), because these models have no
  Matryoshka-trained embedding.
* **Location vectors** (models with location tokens: OlmoEarth v1.3's attention pooler): one
  vector per ``s x s`` pixels (``s`` = ``location_patch_size``, default 1: per pixel, 10 m).
  The pooler places one learned query at the centre of every ``s x s`` cell (2-D RoPE
  coordinates in pixels) and lets it cross-attend to the encoder's ``p x p`` patch tokens (and
  self-attend to the other queries), depth by depth; the distilled student head turns each
  query into the ``location_embedding`` Ai2 ships (128-d for v1.3 Base, its 64-d prefix a
  Matryoshka embedding). The archive stores that embedding's leading ``dims`` (one of the
  student's widths), L2-normalized: no PCA, no resampling. Each pixel's vector is computed by
  the model at that pixel's position; what it knows of the pixel's own spectrum comes through
  the patch tokens (whose patch embedding runs a per-pixel MLP before the linear projection of
  the patch), so pixels of one patch differ by position-dependent reads of the same tokens and
  their neighbours, not by a token of their own (at ``p = 1`` every pixel has its own token).
"""

from __future__ import annotations

from dataclasses import dataclass

from geolatent.archive.store import ArchiveError

PCA_DIMS = (128, 64)


@dataclass(frozen=True)
class VectorPlan:
    """The vectors of one build.

    Attributes:
        source: ``feature_map``, ``location_embedding`` (the distilled student) or
            ``location_tokens`` (a pooler without a student).
        patch_size: p, the model's token side in input pixels.
        cell: the output pixel side in input pixels: ``p`` for patch vectors, ``s`` for location
            vectors (1 = per pixel).
        width: F, the width of the model's vectors before reduction.
        dims: stored dims.
        reduction: ``pca`` or ``matryoshka_prefix``.
        prefixes: the valid lower-dimensional prefixes of a stored vector (renormalize after
            slicing), ascending, ``dims`` last.
    """

    source: str
    patch_size: int
    cell: int
    width: int
    dims: int
    reduction: str
    prefixes: tuple[int, ...]

    @property
    def location_patch_size(self) -> int | None:
        """s for location vectors, None for patch vectors (the ``embed`` argument)."""
        return None if self.source == "feature_map" else self.cell

    @property
    def resolution_m(self) -> float:
        """Side of an output pixel in metres (10 m input pixels)."""
        from geolatent.modalities import BASE_RESOLUTION_M

        return BASE_RESOLUTION_M * self.cell

    def attrs(self) -> dict:
        """The ``geoemb:vectors`` attribute: how the vectors were made and their resolution."""
        how = {
            "feature_map": "mean over time steps and bandsets of the encoder's tokens of each "
                           "p x p patch, reduced by a PCA fitted on the build",
            "location_embedding": "the model's distilled location embedding (v1.3 attention "
                                  "pooler, one learned query at the centre of each cell reading "
                                  "the encoder's patch tokens, then the student head); its "
                                  "leading dims (Matryoshka prefix), L2-normalized; computed "
                                  "per cell by the model, not resampled",
            "location_tokens": "the model's location tokens (v1.3 attention pooler, one learned "
                               "query at the centre of each cell reading the encoder's patch "
                               "tokens), reduced by a PCA fitted on the build",
        }[self.source]
        return {"source": self.source, "model_patch_size": self.patch_size,
                "cell_pixels": self.cell, "resolution_m": self.resolution_m,
                "per_pixel": self.cell == 1, "width": self.width, "method": how}  # fmt: skip


def plan_vectors(config, patch_size: int, location_patch_size: int | None,
                 dims: int) -> VectorPlan:
    """The vectors a build of a model with ``config`` stores.

    Args:
        config: the model's :class:`~geolatent.model.config.ModelConfig`.
        patch_size: p (1-8).
        location_patch_size: s for models with location tokens (divides p; default 1, one
            vector per pixel); must be None for other models.
        dims: stored dims: 128 or 64 for a PCA; one of the student's widths for the distilled
            embedding.

    Raises:
        ArchiveError: an option the model cannot serve, naming the CLI flag to change.
    """
    pooler = config.pooler
    if pooler is None:
        if location_patch_size is not None:
            raise ArchiveError(
                f"--location-patch-size needs a model with location tokens (OlmoEarth v1.3, an "
                f"attention pooler); this is a {config.version} model, whose archive has one "
                f"vector per --patch-size {patch_size} patch: leave --location-patch-size out"
            )
        return _pca_plan("feature_map", patch_size, patch_size, config.embedding_size, dims)
    s = 1 if location_patch_size is None else location_patch_size
    if isinstance(s, bool) or not isinstance(s, int) or s < 1 or patch_size % s:
        raise ArchiveError(f"--location-patch-size {s!r} must be a positive divisor of "
                           f"--patch-size {patch_size} (1 gives one vector per 10 m pixel)")
    if not pooler.student_dims:
        return _pca_plan("location_tokens", patch_size, s, pooler.pooler_dim, dims)
    widths = sorted(pooler.student_dims, reverse=True)
    if dims not in widths:
        raise ArchiveError(
            f"--dims {dims}: this model's distilled location embedding is Matryoshka-trained "
            f"at the widths {widths}; give one of them"
        )
    return VectorPlan("location_embedding", patch_size, s, widths[0], dims, "matryoshka_prefix",
                      tuple(sorted(d for d in widths if d <= dims)))


def _pca_plan(source: str, patch_size: int, cell: int, width: int, dims: int) -> VectorPlan:
    if dims not in PCA_DIMS:
        raise ArchiveError(f"--dims must be 128 or 64 (a PCA of the model's vectors), got {dims}")
    if dims > width:
        raise ArchiveError(f"--dims {dims} exceeds the model's embedding size {width}; "
                           "use --dims 64")  # fmt: skip
    return VectorPlan(source, patch_size, cell, width, dims, "pca",
                      tuple(d for d in (16, 32, 64, 128) if d <= dims))
