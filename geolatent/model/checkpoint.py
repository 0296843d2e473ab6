"""Checkpoints: OlmoEarth v1 release folders and geolatent's own format.

* v1 release folder (``OlmoEarth-v1-{Nano,Tiny,Base,Large}``): ``config.json`` (experiment config,
  the model under ``"model"``) and ``weights.pth`` (``torch.save`` of the whole state dict with
  prefixes ``encoder.``, ``decoder.``, ``target_encoder.``).
* geolatent folder: ``config.json`` (``{"format": "geolatent", "model": ModelConfig}``) and
  ``model.safetensors``.

Loading is strict: a missing path or file, a missing or unexpected key, or a shape mismatch is a
:class:`CheckpointError` naming the problem. There is no fallback to random weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from geolatent.model.config import ModelConfig, PoolerConfig
from geolatent.model.latent_mim import LatentMIM
from geolatent.model.precision import current_precision, resolve_precision, set_precision
from geolatent.model.versions import size_name, version_spec

FORMAT_NAME = "geolatent"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
RELEASE_WEIGHTS_FILE = "weights.pth"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded exactly."""


def _class_name(cfg: dict) -> str:
    # Older configs name classes through deprecated module paths; match on the class name.
    return str(cfg.get("_CLASS_", "")).rsplit(".", 1)[-1]


# Every field a release config may carry, per entry. Fields that do not change the forward pass
# (training switches) are accepted and ignored; any other field is an error, so a config that
# means a different model is never silently loaded as a known one.
_MODEL_FIELDS = {
    "_CLASS_", "encoder_config", "decoder_config", "projection_only_target",
    "location_token_distillation_head_config", "supervision_head_config",
}
_COMMON_FIELDS = {
    "_CLASS_", "supported_modality_names", "max_sequence_length", "drop_path", "mlp_ratio",
    "num_heads", "depth", "learnable_channel_embeddings", "random_channel_embeddings",
    "use_flash_attn", "qk_norm", "tokenization_config", "position_encoding",
    "spatial_pos_encoding", "rope_base", "rope_coordinate_scale", "rope_mixed_base",
    "rope_temporal_coordinate_scale", "temporal_rope_dim_frac",
}
_ENCODER_FIELDS = _COMMON_FIELDS | {
    "embedding_size", "max_patch_size", "min_patch_size", "num_register_tokens",
    "num_projection_layers", "aggregate_then_project", "frozen_patch_embeddings",
    "log_token_norm_stats", "use_linear_patch_embed", "band_dropout_rate", "random_band_dropout",
    "band_dropout_modalities", "patch_embed_hidden_sizes", "attention_pooler_config",
}
_DECODER_FIELDS = _COMMON_FIELDS | {
    "encoder_embedding_size", "decoder_embedding_size", "output_embedding_size", "pooler_dim",
    "use_attention_pooler",
}
_POOLER_FIELDS = {
    "_CLASS_", "pooler_dim", "attn_dim", "pooler_depth", "per_depth_read_proj", "num_heads",
    "student_dims", "student_output_norm",
}
_CLASSES = {
    "model": {"LatentMIMConfig"},
    "encoder_config": {"EncoderConfig"},
    "decoder_config": {"PredictorConfig"},
    "attention_pooler_config": {"AttentionPoolerConfig"},
    "tokenization_config": {"TokenizationConfig"},
    "band group": {"ModalityTokenization"},
    "location_token_distillation_head_config": {"LocationTokenDistillationHeadConfig"},
    "supervision_head_config": {"SupervisionHeadConfig"},
}
# Training-only heads a release may carry; inference ignores their weights (state-dict prefix).
_TRAINING_HEADS = {
    "location_token_distillation_head_config": "location_token_distillation_head.",
    "supervision_head_config": "supervision_head.",
}


def _check_fields(entry: dict, known: set[str], where: str, source: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CheckpointError(
            f"{source}: unknown field(s) {unknown} in {where}; geolatent does not know what they "
            "change, so it refuses to load a possibly different model (upgrade geolatent)"
        )


def _check_class(entry: dict, kind: str, where: str, source: str) -> None:
    name = _class_name(entry)
    if name and name not in _CLASSES[kind]:
        raise CheckpointError(
            f"{source}: unknown _CLASS_ {entry.get('_CLASS_')!r} in {where} (expected "
            f"{sorted(_CLASSES[kind])})"
        )


def _band_groups(tok: dict | None, where: str, source: str) -> dict[str, list[list[str]]]:
    if not tok:
        return {}
    _check_class(tok, "tokenization_config", where, source)
    _check_fields(tok, {"_CLASS_", "overrides"}, where, source)
    out = {}
    for mod, entry in (tok.get("overrides") or {}).items():
        _check_class(entry, "band group", f"{where}.overrides.{mod}", source)
        _check_fields(entry, {"_CLASS_", "band_groups"}, f"{where}.overrides.{mod}", source)
        out[mod] = [list(g) for g in entry["band_groups"]]
    return out


def _position_encoding(entry: dict) -> str:
    # v1.2 releases name it spatial_pos_encoding (deprecated alias), v1.3 position_encoding.
    return entry.get("position_encoding", entry.get("spatial_pos_encoding", "absolute"))


def detect_version(model_cfg: dict, source: str = "config.json") -> str:
    """The release version a ``"model"`` config entry describes (see :mod:`.versions`)."""
    enc = model_cfg.get("encoder_config", {})
    linear = bool(enc.get("use_linear_patch_embed", False))
    pe = _position_encoding(enc)
    pooler = enc.get("attention_pooler_config") is not None
    table = {
        (False, "absolute", False): "v1",
        (True, "absolute", False): "v1.1",
        (True, "rope_3d_mixed", False): "v1.2",
        (True, "rope_3d_mixed", True): "v1.3",
    }
    key = (linear, pe, pooler)
    if key not in table:
        raise CheckpointError(
            f"{source}: use_linear_patch_embed={linear}, position encoding {pe!r}, attention "
            f"pooler {'present' if pooler else 'absent'}: not a released OlmoEarth architecture "
            "(v1, v1.1, v1.2, v1.3)"
        )
    return table[key]


def config_from_release(model_cfg: dict, source: str = "config.json") -> ModelConfig:
    """The :class:`ModelConfig` of the ``"model"`` entry of a release ``config.json`` (any
    version: v1, v1.1, v1.2, v1.3). Strict: see the module docstring."""
    _check_class(model_cfg, "model", "model", source)
    _check_fields(model_cfg, _MODEL_FIELDS, "model", source)
    try:
        enc, dec = model_cfg["encoder_config"], model_cfg["decoder_config"]
    except KeyError as e:
        raise CheckpointError(f"{source}: model config has no {e.args[0]!r}") from None
    _check_class(enc, "encoder_config", "model.encoder_config", source)
    _check_class(dec, "decoder_config", "model.decoder_config", source)
    _check_fields(enc, _ENCODER_FIELDS, "model.encoder_config", source)
    _check_fields(dec, _DECODER_FIELDS, "model.decoder_config", source)
    for key in _TRAINING_HEADS:
        if key in model_cfg:
            _check_class(model_cfg[key], key, f"model.{key}", source)
    version = detect_version(model_cfg, source)
    unsupported = {
        "num_register_tokens": (enc.get("num_register_tokens", 0), 0),
        "qk_norm": (enc.get("qk_norm", False), False),
        "decoder qk_norm": (dec.get("qk_norm", False), False),
        "num_projection_layers": (enc.get("num_projection_layers", 1), 1),
        "aggregate_then_project": (enc.get("aggregate_then_project", True), True),
        "rope_base": (enc.get("rope_base", 10000.0), 10000.0),
        "decoder rope_base": (dec.get("rope_base", 10000.0), 10000.0),
    }
    for name, (got, want) in unsupported.items():
        if got != want:
            raise CheckpointError(
                f"{source}: {name}={got!r} is not a released setting (releases use {want!r})"
            )
    want_dec_pe = {"v1": "absolute", "v1.1": "absolute", "v1.2": "rope_3d_mixed", "v1.3": "rope"}
    if _position_encoding(dec) != want_dec_pe[version]:
        raise CheckpointError(
            f"{source}: decoder position encoding {_position_encoding(dec)!r} does not match a "
            f"{version} model (expected {want_dec_pe[version]!r})"
        )
    if bool(dec.get("use_attention_pooler", False)) != (version == "v1.3"):
        raise CheckpointError(
            f"{source}: decoder use_attention_pooler={dec.get('use_attention_pooler')!r} does not "
            f"match the encoder ({version})"
        )
    mods = list(enc["supported_modality_names"])
    if list(dec.get("supported_modality_names", mods)) != mods:
        raise CheckpointError(f"{source}: encoder and decoder support different modalities")
    if dec.get("encoder_embedding_size", enc["embedding_size"]) != enc["embedding_size"]:
        raise CheckpointError(f"{source}: decoder encoder_embedding_size differs from encoder")
    groups = _band_groups(enc.get("tokenization_config"), "model.encoder_config", source)
    if _band_groups(dec.get("tokenization_config"), "model.decoder_config", source) != groups:
        raise CheckpointError(f"{source}: encoder and decoder tokenize bands differently")
    pooler = None
    pcfg = enc.get("attention_pooler_config")
    if pcfg is not None:
        _check_class(pcfg, "attention_pooler_config", "attention_pooler_config", source)
        _check_fields(pcfg, _POOLER_FIELDS, "model.encoder_config.attention_pooler_config", source)
        try:
            pooler = PoolerConfig(**{k: v for k, v in pcfg.items() if k != "_CLASS_"})
        except ValueError as e:
            raise CheckpointError(f"{source}: invalid attention_pooler_config: {e}") from None
        if dec.get("pooler_dim", pooler.pooler_dim) != pooler.pooler_dim:
            raise CheckpointError(f"{source}: decoder pooler_dim differs from the encoder's")
    if version != "v1.3" and "projection_only_target" in model_cfg and \
            model_cfg["projection_only_target"]:  # fmt: skip
        raise CheckpointError(f"{source}: projection_only_target is a v1.3 setting")
    try:
        return ModelConfig(
            version=version,
            size=size_name(enc["embedding_size"], enc["depth"], enc["num_heads"]),
            embedding_size=enc["embedding_size"],
            depth=enc["depth"],
            num_heads=enc["num_heads"],
            mlp_ratio=enc.get("mlp_ratio", 4.0),
            decoder_embedding_size=dec["decoder_embedding_size"],
            decoder_depth=dec["depth"],
            decoder_num_heads=dec["num_heads"],
            output_embedding_size=dec.get("output_embedding_size"),
            modalities=mods,
            max_patch_size=enc.get("max_patch_size", 8),
            # v1.1+ have no time table: the field is kept in their configs but means nothing.
            max_sequence_length=enc.get("max_sequence_length", 12) if version == "v1" else 12,
            drop_path=enc.get("drop_path", 0.1),
            decoder_drop_path=dec.get("drop_path", 0.0),
            band_groups=groups,
            patch_embed_hidden_sizes=list(enc.get("patch_embed_hidden_sizes") or [])
            if version != "v1" else [],
            rope_temporal_coordinate_scale=enc.get("rope_temporal_coordinate_scale", 1.0 / 30.0),
            rope_coordinate_scale=enc.get("rope_coordinate_scale", 1.0),
            pooler=pooler,
            projection_only_target=bool(model_cfg.get("projection_only_target", False)),
        )  # fmt: skip
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid model config: {e}") from None


def _check_and_load(
    module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, prefix: str = ""
) -> None:
    """Load ``state`` strictly; errors name the full checkpoint keys (``prefix + key``)."""
    expected = module.state_dict()
    missing = sorted(prefix + k for k in set(expected) - set(state))
    unexpected = sorted(prefix + k for k in set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:8]}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:8]}")
    for k in sorted(set(expected) & set(state)):
        if tuple(expected[k].shape) != tuple(state[k].shape):
            problems.append(
                f"shape mismatch for {prefix}{k}: checkpoint {tuple(state[k].shape)}, "
                f"model {tuple(expected[k].shape)}"
            )
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _split_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (read in 8 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_release_folder(path: Path) -> LatentMIM:
    """Load a release folder of any version (``config.json`` + ``weights.pth``)."""
    cfg_path, w_path = path / CONFIG_FILE, path / RELEASE_WEIGHTS_FILE
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise CheckpointError(f"{cfg_path}: no 'model' entry")
    model_cfg = cfg["model"]
    model = LatentMIM(config_from_release(model_cfg, str(cfg_path)))
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file
        raise CheckpointError(f"{w_path}: cannot read weights ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{w_path}: expected a state dict, got {type(state).__name__}")
    known = ["encoder.", "decoder.", "target_encoder."]
    # Training-only heads (v1.3) are dropped, as the reference loader does, but only when the
    # config declares them: stray keys of an undeclared head are still an error.
    ignored = tuple(pre for key, pre in _TRAINING_HEADS.items() if key in model_cfg)
    state = {k: v for k, v in state.items() if not k.startswith(ignored)} if ignored else state
    stray = sorted(k for k in state if not k.startswith(tuple(known)))
    if stray:
        raise CheckpointError(f"{w_path}: unexpected keys ({len(stray)}): {stray[:8]}")
    _check_and_load(model.encoder, _split_prefix(state, "encoder."), str(w_path), "encoder.")
    _check_and_load(model.decoder, _split_prefix(state, "decoder."), str(w_path), "decoder.")
    # The target encoder is read on its own (in releases it differs from the trained encoder);
    # only its patch embedding is used (token exit 0), the rest must still match the layout.
    target = _split_prefix(state, "target_encoder.")
    _check_and_load(
        model.target_projection,
        _split_prefix(target, "patch_embeddings."),
        str(w_path),
        "target_encoder.patch_embeddings.",
    )
    rest = {k: tuple(v.shape) for k, v in target.items() if not k.startswith("patch_embeddings.")}
    if model.config.projection_only_target:
        expected_rest: dict[str, tuple] = {}
    else:
        enc_shapes = {k: tuple(v.shape) for k, v in model.encoder.state_dict().items()}
        expected_rest = {
            k: s for k, s in enc_shapes.items() if not k.startswith("patch_embeddings.")
        }
    if rest != expected_rest:
        diff = sorted(set(rest) ^ set(expected_rest)) or sorted(
            k for k in rest if rest[k] != expected_rest[k]
        )
        names = [f"target_encoder.{k}" for k in diff[:8]]
        raise CheckpointError(
            f"{w_path}: target_encoder layout differs from the expected one at {names}"
        )
    model.provenance = _local_provenance(path, model, w_path)
    return model


def _local_provenance(folder: Path, model: LatentMIM, weights: Path) -> dict:
    """Where a model loaded from a local folder came from (no hub repository or revision)."""
    return {
        "source": str(folder.resolve()),
        "version": model.config.version,
        "weights_file": weights.name,
        "sha256": sha256_file(weights),
        "repo_id": None,
        "revision": None,
    }


def load_geolatent_folder(path: Path) -> LatentMIM:
    """Load a folder written by :func:`save_model`."""
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{cfg_path}: not a geolatent checkpoint config")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format version {cfg['format_version']} is newer than this geolatent "
            f"({FORMAT_VERSION}); upgrade geolatent"
        )
    try:
        config = ModelConfig(**cfg["model"])
    except Exception as e:
        raise CheckpointError(f"{cfg_path}: invalid model config: {e}") from None
    model = LatentMIM(config)
    try:
        state = load_file(str(w_path))
    except Exception as e:
        raise CheckpointError(f"{w_path}: cannot read weights ({type(e).__name__}: {e})") from e
    _check_and_load(model, state, str(w_path))
    model.provenance = _local_provenance(path, model, w_path)
    if isinstance(cfg.get("derived_from"), dict):
        model.provenance["derived_from"] = cfg["derived_from"]
    return model


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    precision: str = "fp32",
) -> LatentMIM:
    """Load a model from a release folder (any version), a geolatent folder, or a release id.

    Args:
        path: folder holding ``config.json`` plus ``weights.pth`` (release) or
            ``model.safetensors`` (geolatent); or a Hugging Face id such as
            ``"allenai/OlmoEarth-v1_2-Base"`` / ``"OlmoEarth-v1_2-Base"`` (see
            :mod:`geolatent.model.hub`).
        device: where to put the weights.
        revision: for an id: branch, tag or commit (default: the default branch).
        precision: encoder precision for inference, ``fp32`` (exact) | ``bf16`` | ``int8`` |
            ``auto`` (see :mod:`geolatent.model.precision`); reduced precisions cannot train.

    Returns:
        The :class:`LatentMIM` in eval mode; ``model.provenance`` says where it came from.

    Raises:
        FileNotFoundError: the path or a required file does not exist.
        CheckpointError: the files do not describe a released architecture exactly.
        geolatent.model.hub.ModelNotAvailable: an id whose weights cannot be had here.
        PrecisionError: this machine cannot run ``precision`` (names the missing CPU feature).
    """
    from geolatent.model import hub

    resolve_precision(precision, device)  # fail before reading weights
    p = Path(path)
    if not p.exists() and hub.looks_like_id(str(path)):
        model = hub.load_release(str(path), revision).to(device).eval()
        set_precision(model, precision)
        return model
    if revision is not None:
        raise ValueError(f"revision= applies to model ids, but {p} is a local path")
    if not p.exists():
        raise FileNotFoundError(
            f"no checkpoint at {p} (not a folder; a release id looks like "
            "'allenai/OlmoEarth-v1_2-Base')"
        )
    if p.is_file():
        p = p.parent if p.name in (CONFIG_FILE, WEIGHTS_FILE, RELEASE_WEIGHTS_FILE) else p
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a checkpoint folder")
    if not (p / CONFIG_FILE).exists():
        raise FileNotFoundError(
            f"{p / CONFIG_FILE} not found: a checkpoint folder needs config.json"
        )
    if (p / WEIGHTS_FILE).exists():
        model = load_geolatent_folder(p)
    elif (p / RELEASE_WEIGHTS_FILE).exists():
        model = load_release_folder(p)
    else:
        raise FileNotFoundError(
            f"{p}: neither {WEIGHTS_FILE} (geolatent) nor {RELEASE_WEIGHTS_FILE} (release) found"
        )
    model = model.to(device).eval()
    set_precision(model, precision)
    return model


def save_model(model: LatentMIM, path: str | os.PathLike) -> Path:
    """Write ``model`` as a geolatent folder (``config.json``, ``model.safetensors``) atomically."""
    if current_precision(model) != "fp32":
        raise ValueError(f"this model was loaded in {current_precision(model)} for inference; "
                         "save the fp32 model (load it with precision='fp32')")  # fmt: skip
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
           "model": model.config.model_dump()}  # fmt: skip
    # Where the weights started from (a release id + commit + sha256), kept across saves.
    origin = getattr(model, "provenance", {}) or {}
    if origin.get("sha256"):
        cfg["derived_from"] = origin.get("derived_from", origin)
    for name, writer in (
        (WEIGHTS_FILE, lambda f: save_file(state, f)),
        (CONFIG_FILE, lambda f: Path(f).write_text(json.dumps(cfg, indent=2))),
    ):
        fd, tmp = tempfile.mkstemp(dir=p, prefix=f".{name}.")
        os.close(fd)
        try:
            writer(tmp)
            os.replace(tmp, p / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return p


def release_config(config: ModelConfig) -> dict:
    """The ``"model"`` entry of a release ``config.json`` describing ``config`` (any version)."""
    spec = version_spec(config.version)
    enc = {
        "supported_modality_names": list(config.modalities),
        "embedding_size": config.embedding_size,
        "max_patch_size": config.max_patch_size,
        "min_patch_size": 1,
        "num_heads": config.num_heads,
        "mlp_ratio": config.mlp_ratio,
        "depth": config.depth,
        "drop_path": config.drop_path,
        "max_sequence_length": config.max_sequence_length,
        "num_register_tokens": 0,
        "num_projection_layers": 1,
        "aggregate_then_project": True,
        "qk_norm": False,
        "_CLASS_": "olmoearth_pretrain.nn.flexi_vit.EncoderConfig",
    }
    dec = {
        "supported_modality_names": list(config.modalities),
        "encoder_embedding_size": config.embedding_size,
        "decoder_embedding_size": config.decoder_embedding_size,
        "depth": config.decoder_depth,
        "mlp_ratio": config.mlp_ratio,
        "num_heads": config.decoder_num_heads,
        "max_sequence_length": config.max_sequence_length,
        "drop_path": config.decoder_drop_path,
        "qk_norm": False,
        "_CLASS_": "olmoearth_pretrain.nn.flexi_vit.PredictorConfig",
    }
    if config.output_embedding_size is not None:
        dec["output_embedding_size"] = config.output_embedding_size
    if config.band_groups:
        tok = {
            "_CLASS_": "olmoearth_pretrain.nn.tokenization.TokenizationConfig",
            "overrides": {
                m: {"_CLASS_": "olmoearth_pretrain.nn.tokenization.ModalityTokenization",
                    "band_groups": [list(g) for g in groups]}
                for m, groups in config.band_groups.items()
            },
        }  # fmt: skip
        enc["tokenization_config"] = tok
        dec["tokenization_config"] = json.loads(json.dumps(tok))
    if spec.linear_patch_embed:
        enc["use_linear_patch_embed"] = True
        enc["patch_embed_hidden_sizes"] = list(config.patch_embed_hidden_sizes)
    if spec.rope_3d:
        for entry in (enc, dec):
            entry["position_encoding"] = "rope_3d_mixed"
            entry["rope_temporal_coordinate_scale"] = config.rope_temporal_coordinate_scale
            entry["rope_coordinate_scale"] = config.rope_coordinate_scale
            entry["rope_base"] = 10000.0
    out = {"encoder_config": enc, "decoder_config": dec,
           "_CLASS_": "olmoearth_pretrain.nn.latent_mim.LatentMIMConfig"}  # fmt: skip
    if config.pooler is not None:
        pooler = config.pooler.model_dump()
        pooler["_CLASS_"] = "olmoearth_pretrain.nn.flexi_vit.AttentionPoolerConfig"
        enc["attention_pooler_config"] = pooler
        dec["position_encoding"] = "rope"
        dec["use_attention_pooler"] = True
        dec["pooler_dim"] = config.pooler.pooler_dim
        out["projection_only_target"] = config.projection_only_target
    return out


def export_release_folder(model: LatentMIM, path: str | os.PathLike) -> Path:
    """Write ``model`` in the v1 release layout (``config.json`` + ``weights.pth``).

    For use with the reference implementation. ``target_encoder.patch_embeddings.*`` is the
    frozen target projection; geolatent does not keep the rest of the target encoder (unused at
    token exit 0), so those keys are written as copies of the encoder's (none for a
    projection-only target, v1.3).
    """
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.encoder.state_dict().items():
        state[f"encoder.{k}"] = v.detach().cpu().clone()
        if not k.startswith("patch_embeddings.") and not model.config.projection_only_target:
            state[f"target_encoder.{k}"] = v.detach().cpu().clone()
    for k, v in model.decoder.state_dict().items():
        state[f"decoder.{k}"] = v.detach().cpu().clone()
    for k, v in model.target_projection.state_dict().items():
        state[f"target_encoder.patch_embeddings.{k}"] = v.detach().cpu().clone()
    torch.save(state, p / RELEASE_WEIGHTS_FILE)
    (p / CONFIG_FILE).write_text(json.dumps({"model": release_config(model.config)}, indent=2))
    return p
