"""LatentMIM: encoder, decoder and the frozen target projection (Latent MIM Lite)."""

from __future__ import annotations

import torch
from torch import nn

from geolatent.model.config import ModelConfig, model_modalities
from geolatent.model.decoder import Decoder
from geolatent.model.encoder import Encoder, EncoderOutput
from geolatent.model.patch_embed import PatchEmbeddings


class LatentMIM(nn.Module):
    """The OlmoEarth model of any release version (``config.version``).

    ``encoder`` and ``decoder`` are trained; ``target_projection`` is the frozen patch
    embedding of the initial encoder (v1's target encoder at token exit 0: no encodings, no
    blocks, no norm). In release checkpoints it is ``target_encoder.patch_embeddings.*``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        mods = model_modalities(config)
        self.encoder = Encoder.from_config(config)
        self.decoder = Decoder(
            mods, config.embedding_size, config.decoder_embedding_size, config.decoder_depth,
            config.decoder_num_heads, config.mlp_ratio, config.output_embedding_size,
            config.decoder_drop_path, config.version, config.rope_temporal_coordinate_scale,
            config.rope_coordinate_scale, config.pooler.pooler_dim if config.pooler else None,
        )  # fmt: skip
        hidden = config.patch_embed_hidden_sizes if self.encoder.spec.linear_patch_embed else None
        self.target_projection = PatchEmbeddings(mods, config.embedding_size, hidden)
        self.target_projection.requires_grad_(False)
        self.provenance = {"source": "random initialization", "version": config.version}
        self._init_weights()

    def _init_weights(self) -> None:
        # v1: Linear layers xavier-uniform with zero bias; convs keep PyTorch's default init.
        for mod in (self.encoder, self.decoder):
            for m in mod.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
        # The target starts as a copy of the online patch embedding, then stays frozen.
        self.target_projection.load_state_dict(self.encoder.patch_embeddings.state_dict())

    @property
    def provenance(self) -> dict:
        """Where the weights came from, for writers to record (COG tags, bundles, archives).

        Keys: ``source`` (folder path or release id), ``version``, ``weights_file``, ``sha256``
        (of the weights file), ``repo_id`` and ``revision`` (resolved commit; None for local
        folders), ``requested_revision`` (release ids), ``derived_from`` (a geolatent folder
        saved from a model that had a provenance). The same dict is ``model.encoder.provenance``.
        """
        return self.encoder.provenance

    @provenance.setter
    def provenance(self, value: dict) -> None:
        self.encoder.provenance = dict(value)

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_size

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        timestamps: torch.Tensor,
        patch_size: int,
        token_mask: dict[str, torch.Tensor],
    ) -> tuple[EncoderOutput, dict[str, torch.Tensor]]:
        """Masked encoding then decoding (one pretraining view).

        Returns the encoder output and the decoder predictions per modality
        ``[B, h, w, T, S, D]`` (meaningful at ``DECODER`` positions).
        """
        enc = self.encoder(inputs, timestamps, patch_size, token_mask)
        decoded = self.decoder(enc.tokens, token_mask, timestamps, patch_size, enc.location_tokens)
        return enc, decoded

    @torch.no_grad()
    def targets(self, inputs: dict[str, torch.Tensor], patch_size: int) -> dict[str, torch.Tensor]:
        """Frozen target latents of the unmasked input, per modality ``[B, h, w, T, S, D]``."""
        return {m: self.target_projection(m, x, patch_size) for m, x in inputs.items()}

    def embed(self, inputs, timestamps=None, patch_size: int = 4, **kwargs):
        """Embed raw inputs; see :func:`geolatent.model.embed.embed` for arguments and shapes."""
        from geolatent.model.embed import embed

        return embed(self, inputs, timestamps=timestamps, patch_size=patch_size, **kwargs)


def build_model(size: str = "nano", version: str = "v1", **overrides) -> LatentMIM:
    """A model of ``size`` and release ``version`` with freshly initialized (random) weights.

    Use :func:`geolatent.load_model` for trained weights; this is for pretraining from scratch
    and for tests.
    """
    return LatentMIM(ModelConfig.from_size(size, version, **overrides))
