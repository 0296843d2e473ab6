"""The OlmoEarth v1 model: encoder, decoder, Latent MIM container, checkpoints, embedding."""

from geolatent.model.checkpoint import CheckpointError, load_model, save_model
from geolatent.model.config import SIZES, ModelConfig
from geolatent.model.encoder import Encoder, EncoderOutput
from geolatent.model.latent_mim import LatentMIM, build_model
from geolatent.model.tokens import MaskValue

__all__ = [
    "SIZES", "CheckpointError", "Encoder", "EncoderOutput", "LatentMIM", "MaskValue",
    "ModelConfig", "build_model", "load_model", "save_model",
]  # fmt: skip
