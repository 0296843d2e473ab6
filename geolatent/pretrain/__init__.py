"""Pretraining with the OlmoEarth v1 recipe (Latent MIM Lite): data, sampler, masking, losses,
objective and the trainer (single process, DDP or FSDP2)."""

from geolatent.augment import dihedral
from geolatent.pretrain.config import ConfigError, PretrainConfig, load_config
from geolatent.pretrain.dataset import PretrainBatch, PretrainDataset, collate_samples, make_loader
from geolatent.pretrain.losses import infonce_loss, patch_discrimination_loss, total_loss
from geolatent.pretrain.masking import MaskedView, missing_tokens, modality_cross_random
from geolatent.pretrain.objective import PretrainObjective, make_views
from geolatent.pretrain.sampler import PretrainBatchSampler, SampleRequest, max_timesteps
from geolatent.pretrain.samples import Manifest, SampleRecord, build_manifest, write_builtin_samples
from geolatent.pretrain.trainer import Trainer
from geolatent.schedules import lr_factor

__all__ = [
    "ConfigError", "Manifest", "MaskedView", "PretrainBatch", "PretrainBatchSampler",
    "PretrainConfig", "PretrainDataset", "PretrainObjective", "SampleRecord", "SampleRequest",
    "Trainer", "build_manifest", "collate_samples", "dihedral", "infonce_loss", "load_config",
    "lr_factor", "make_loader", "make_views", "max_timesteps", "missing_tokens",
    "modality_cross_random", "patch_discrimination_loss", "total_loss", "write_builtin_samples",
]  # fmt: skip
