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

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from geolatent.model.config import ModelConfig
from geolatent.model.latent_mim import LatentMIM
from geolatent.model.precision import current_precision, resolve_precision, set_precision

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


def config_from_release(model_cfg: dict, source: str = "config.json") -> ModelConfig:
    """The :class:`ModelConfig` of the ``"model"`` entry of a v1 release ``config.json``."""
    if _class_name(model_cfg) not in ("LatentMIMConfig", ""):
        raise CheckpointError(
            f"{source}: model class {model_cfg.get('_CLASS_')!r} is not a v1 LatentMIM model"
        )
    try:
        enc, dec = model_cfg["encoder_config"], model_cfg["decoder_config"]
    except KeyError as e:
        raise CheckpointError(f"{source}: model config has no {e.args[0]!r}") from None
    unsupported = {
        "num_register_tokens": (enc.get("num_register_tokens", 0), 0),
        "qk_norm": (enc.get("qk_norm", False), False),
        "decoder qk_norm": (dec.get("qk_norm", False), False),
        "num_projection_layers": (enc.get("num_projection_layers", 1), 1),
        "aggregate_then_project": (enc.get("aggregate_then_project", True), True),
    }
    for name, (got, want) in unsupported.items():
        if got != want:
            raise CheckpointError(
                f"{source}: {name}={got!r} is not a v1 setting (v1 uses {want!r}); "
                "geolatent implements the released v1 architecture only"
            )
    mods = list(enc["supported_modality_names"])
    if list(dec.get("supported_modality_names", mods)) != mods:
        raise CheckpointError(f"{source}: encoder and decoder support different modalities")
    if dec.get("encoder_embedding_size", enc["embedding_size"]) != enc["embedding_size"]:
        raise CheckpointError(f"{source}: decoder encoder_embedding_size differs from encoder")
    try:
        return ModelConfig(
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
            max_sequence_length=enc.get("max_sequence_length", 12),
            drop_path=enc.get("drop_path", 0.1),
            decoder_drop_path=dec.get("drop_path", 0.0),
        )
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


def load_release_folder(path: Path) -> LatentMIM:
    """Load a v1 release folder (``config.json`` + ``weights.pth``)."""
    cfg_path, w_path = path / CONFIG_FILE, path / RELEASE_WEIGHTS_FILE
    cfg = json.loads(cfg_path.read_text())
    if "model" not in cfg:
        raise CheckpointError(f"{cfg_path}: no 'model' entry")
    model = LatentMIM(config_from_release(cfg["model"], str(cfg_path)))
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file
        raise CheckpointError(f"{w_path}: cannot read weights ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{w_path}: expected a state dict, got {type(state).__name__}")
    known = ("encoder.", "decoder.", "target_encoder.")
    stray = sorted(k for k in state if not k.startswith(known))
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
    enc_shapes = {k: tuple(v.shape) for k, v in model.encoder.state_dict().items()}
    rest = {k: tuple(v.shape) for k, v in target.items() if not k.startswith("patch_embeddings.")}
    expected_rest = {k: s for k, s in enc_shapes.items() if not k.startswith("patch_embeddings.")}
    if rest != expected_rest:
        diff = sorted(set(rest) ^ set(expected_rest)) or sorted(
            k for k in rest if rest[k] != expected_rest[k]
        )
        names = [f"target_encoder.{k}" for k in diff[:8]]
        raise CheckpointError(
            f"{w_path}: target_encoder layout differs from the encoder at {names}"
        )
    return model


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
    return model


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32"
) -> LatentMIM:
    """Load a model from a v1 release folder or a geolatent folder.

    Args:
        path: folder holding ``config.json`` plus ``weights.pth`` (v1 release) or
            ``model.safetensors`` (geolatent).
        device: where to put the weights.
        precision: encoder precision for inference, ``fp32`` (exact) | ``bf16`` | ``int8`` |
            ``auto`` (see :mod:`geolatent.model.precision`); reduced precisions cannot train.

    Returns:
        The :class:`LatentMIM` in eval mode.

    Raises:
        FileNotFoundError: the path or a required file does not exist.
        CheckpointError: the files do not describe this architecture exactly.
        PrecisionError: this machine cannot run ``precision`` (names the missing CPU feature).
    """
    resolve_precision(precision, device)  # fail before reading weights
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
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
            f"{p}: neither {WEIGHTS_FILE} (geolatent) nor {RELEASE_WEIGHTS_FILE} (v1 release) found"
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
    """The ``"model"`` entry of a v1 release ``config.json`` describing ``config``."""
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
    return {"encoder_config": enc, "decoder_config": dec,
            "_CLASS_": "olmoearth_pretrain.nn.latent_mim.LatentMIMConfig"}  # fmt: skip


def export_release_folder(model: LatentMIM, path: str | os.PathLike) -> Path:
    """Write ``model`` in the v1 release layout (``config.json`` + ``weights.pth``).

    For use with the reference implementation. ``target_encoder.patch_embeddings.*`` is the
    frozen target projection; geolatent does not keep the rest of v1's target encoder (unused at
    token exit 0), so those keys are written as copies of the encoder's.
    """
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.encoder.state_dict().items():
        state[f"encoder.{k}"] = v.detach().cpu().clone()
        if not k.startswith("patch_embeddings."):
            state[f"target_encoder.{k}"] = v.detach().cpu().clone()
    for k, v in model.decoder.state_dict().items():
        state[f"decoder.{k}"] = v.detach().cpu().clone()
    for k, v in model.target_projection.state_dict().items():
        state[f"target_encoder.patch_embeddings.{k}"] = v.detach().cpu().clone()
    torch.save(state, p / RELEASE_WEIGHTS_FILE)
    (p / CONFIG_FILE).write_text(json.dumps({"model": release_config(model.config)}, indent=2))
    return p
