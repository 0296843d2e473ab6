"""geolatent: an OlmoEarth-compatible multimodal spatio-temporal Earth-observation model."""

from geolatent.modalities import MISSING_VALUE, MODALITIES, Modality, get_modality
from geolatent.model import (
    CheckpointError,
    LatentMIM,
    MaskValue,
    ModelConfig,
    build_model,
    load_model,
    save_model,
)
from geolatent.normalize import normalize

__version__ = "0.1.0"

__all__ = [
    "MISSING_VALUE", "MODALITIES", "CheckpointError", "LatentMIM", "MaskValue", "Modality",
    "ModelConfig", "build_model", "get_modality", "load_model", "normalize", "save_model",
]  # fmt: skip
