"""The pretraining loop: one process on CPU by default, DDP or FSDP2 under ``torchrun``.

Per optimizer step, each rank runs its share of the global batch in micro-batches (gradient
accumulation), then AdamW steps with gradient clipping and the cosine schedule. Every random
draw (sample order and crops, augmentation, masks, drop path) is keyed by
``(seed, step, micro-batch)``, which makes a resumed run reproduce the uninterrupted one and N
ranks reproduce one process with the same global batch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from geolatent.augment import dihedral
from geolatent.data.run import check_writable
from geolatent.model.checkpoint import load_model
from geolatent.model.config import ModelConfig, model_modalities
from geolatent.model.latent_mim import LatentMIM, build_model
from geolatent.pretrain import distributed as D
from geolatent.pretrain.checkpointing import (
    clean_temporaries,
    latest_checkpoint,
    load_checkpoint,
    model_from_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from geolatent.pretrain.config import (
    CONFIG_NAME,
    ConfigError,
    PretrainConfig,
    load_config,
    resume_differences,
)
from geolatent.pretrain.dataset import PretrainBatch, PretrainDataset, make_loader
from geolatent.pretrain.monitor import Monitor
from geolatent.pretrain.objective import PretrainObjective, StepTimer, make_views
from geolatent.pretrain.sampler import (
    AUGMENT,
    DROP_PATH,
    MASK_A,
    MASK_B,
    PretrainBatchSampler,
    derive_seed,
)
from geolatent.pretrain.samples import (
    MANIFEST_NAME,
    Manifest,
    build_manifest,
    write_builtin_samples,
)
from geolatent.runtime import ComputeMeter
from geolatent.schedules import warmup_cosine

log = logging.getLogger(__name__)

LOSS_KEYS = ("loss", "patch_disc_a", "patch_disc_b", "infonce")


def resolve_chunk_size(chunk: int | str | None, device: torch.device) -> int | None:
    """``auto``: 2 sample-views per call on CPU (less attention padding), one call on GPU."""
    if chunk == "auto":
        return 2 if device.type == "cpu" else None
    return chunk  # type: ignore[return-value]


def use_bf16(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def micro_batch_seeds(seed: int, step: int, micro_index: int) -> dict[str, int]:
    """Seeds of the augmentation, the two masks and drop path of one micro-batch."""
    return {
        name: derive_seed(seed, purpose, step, micro_index)
        for name, purpose in (("augment", AUGMENT), ("mask_a", MASK_A), ("mask_b", MASK_B),
                              ("drop_path", DROP_PATH))
    }  # fmt: skip


def prepare_micro_batch(
    batch: PretrainBatch,
    seed: int,
    encode_ratio: float = 0.5,
    decode_ratio: float = 0.5,
    modalities: dict | None = None,
):
    """Augment (one dihedral transform for the batch) and draw the two masked views, on the
    batch's device (``modalities``: the model's bandsets). Returns ``(inputs, view_a, view_b)``."""
    seeds = micro_batch_seeds(seed, batch.step, batch.micro_index)
    k = seeds["augment"] % 8
    inputs = {m: dihedral(x, k) for m, x in batch.inputs.items()}
    dev = batch.timestamps.device
    gen_a = torch.Generator(device=dev).manual_seed(seeds["mask_a"])
    gen_b = torch.Generator(device=dev).manual_seed(seeds["mask_b"])
    va, vb = make_views(
        inputs, batch.patch_size, gen_a, gen_b, encode_ratio, decode_ratio, modalities
    )
    return inputs, va, vb


class Trainer:
    """Runs (or resumes) a pretraining run in ``run_dir``.

    Args:
        config: the validated configuration.
        run_dir: output folder: ``config.yaml``, ``metrics.jsonl``, ``compute.json`` (the last
            session's :class:`~geolatent.runtime.ComputeMeter` report), ``checkpoints/``, ``data/``.
        resume: continue from the latest checkpoint of ``run_dir`` (error when there is none).
        console: where the progress bar and messages go.
    """

    def __init__(
        self,
        config: PretrainConfig,
        run_dir: str | os.PathLike,
        resume: bool = False,
        console: Console | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.console = console or Console(stderr=True)

    # -- setup -------------------------------------------------------------------------------
    def _check_run_dir(self, info: D.DistInfo) -> Path | None:
        if info.rank == 0:  # leftovers of a run killed while saving a checkpoint
            clean_temporaries(self.run_dir)
        ckpt = latest_checkpoint(self.run_dir)
        saved = self.run_dir / CONFIG_NAME
        if self.resume:
            if ckpt is None:
                raise FileNotFoundError(
                    f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}"
                )
            if saved.exists():
                diffs = resume_differences(load_config(saved), self.config)
                if diffs:
                    raise ConfigError(
                        f"--resume: the config differs from the run's saved {saved} at {diffs}; "
                        "only schedule.max_steps, data loading, checkpoint and logging may change"
                    )
        elif ckpt is not None:
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue it or "
                "choose a new --run-dir"
            )
        return ckpt

    def _manifest(self, info: D.DistInfo) -> Manifest:
        data = self.config.data
        local = self.run_dir / MANIFEST_NAME
        if data.builtin is not None:
            root = self.run_dir / "data"
            if info.is_main:
                b = data.builtin
                write_builtin_samples(root, b.num_samples, b.size_px, b.timesteps, b.seed)
        else:
            root = Path(data.root).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(f"data.root {root} is not a folder")
        if data.manifest is not None:
            path = Path(data.manifest).expanduser()
        elif (root / MANIFEST_NAME).exists() and data.builtin is None:
            path = root / MANIFEST_NAME
        else:
            path = local
        if info.is_main and not path.exists():
            manifest, errors = build_manifest(root, workers=data.num_workers)
            if errors:
                bad_log = self.run_dir / "bad_samples.log"
                bad_log.write_text("\n".join(errors) + "\n")
                self.console.print(f"[yellow]{len(errors)} sample files skipped[/] (see {bad_log})")
            manifest.save(path)
        D.barrier(info)
        manifest = Manifest.load(path, root=root)
        if len(manifest) == 0:
            raise ValueError(f"no usable sample files under {root}")
        return manifest

    def _model(self) -> LatentMIM:
        cfg = self.config.model
        torch.manual_seed(self.config.train.seed)  # identical initial weights on every rank
        if cfg.init_from:
            return load_model(cfg.init_from).train()
        return build_model(cfg.size, cfg.version, drop_path=cfg.drop_path)

    # -- run ---------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train until ``schedule.max_steps``; returns the metric records of this session."""
        info = D.setup(self.config.train.device)
        try:
            return self._fit(info)
        finally:
            D.teardown(info)

    def _fit(self, info: D.DistInfo) -> list[dict]:
        cfg = self.config
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        if info.is_main:
            check_writable(self.run_dir, "--run-dir")  # one line, not EROFS from mkdir
            self.run_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(info)
        ckpt = self._check_run_dir(info)
        if info.is_main:
            cfg.save(self.run_dir)
        manifest = self._manifest(info)
        device = info.device
        bf16 = use_bf16(cfg.train.precision, device)

        model = self._model().to(device).train()
        objective = PretrainObjective(
            model, cfg.loss.patch_disc_tau, cfg.loss.infonce_tau, cfg.loss.infonce_weight,
            resolve_chunk_size(cfg.train.chunk_size, device),
        )  # fmt: skip
        wrapped = D.wrap(objective, info, cfg.train.parallel, bf16)
        params = [p for p in wrapped.parameters() if p.requires_grad]
        opt_cfg = cfg.optimizer
        optimizer = torch.optim.AdamW(
            params, lr=opt_cfg.lr, betas=opt_cfg.betas, eps=opt_cfg.eps,
            weight_decay=opt_cfg.weight_decay,
        )  # fmt: skip
        sch = cfg.schedule
        scheduler = warmup_cosine(optimizer, sch.warmup_steps, sch.max_steps, sch.final_lr_ratio)
        state_opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        start_step, bad_total = 0, 0
        if ckpt is not None:
            saved_model, state = load_checkpoint(ckpt)
            model_sd = {f"model.{k}": v for k, v in saved_model.state_dict().items()}
            set_model_state_dict(wrapped, model_sd, options=StateDictOptions(full_state_dict=True))
            # Parameters that never got a gradient (e.g. absent modalities) have no Adam state.
            set_optimizer_state_dict(
                wrapped, optimizer, state["optimizer"],
                options=StateDictOptions(full_state_dict=True, strict=False),
            )  # fmt: skip
            scheduler.load_state_dict(state["scheduler"])
            start_step = int(state["step"])
            bad_total = int(state.get("bad_samples", 0))
            rngs = state.get("rng", [])
            if len(rngs) == info.world_size:
                set_rng_state(rngs[info.rank])
            if info.is_main:
                self.console.print(f"resuming from {ckpt} (step {start_step})")

        tc = cfg.train
        sampler = PretrainBatchSampler(
            len(manifest), tc.global_batch_size, tc.micro_batch_size, tc.seed,
            start_step=start_step, end_step=sch.max_steps, rank=info.rank,
            world_size=info.world_size, min_patch_size=cfg.sampler.min_patch_size,
            max_patch_size=cfg.sampler.max_patch_size, min_grid=cfg.sampler.min_grid,
            max_grid=cfg.sampler.max_grid,
            token_budget=cfg.sampler.token_budget,
            min_sample_px=min(min(r.height, r.width) for r in manifest.records),
        )  # fmt: skip
        dataset = PretrainDataset(
            manifest, cfg.data.modalities, cfg.data.max_retries, model_config=model.config
        )
        model_mods = {m.name: m for m in model_modalities(model.config)}
        loader = make_loader(
            dataset, sampler, cfg.data.num_workers, cfg.data.prefetch_factor,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        monitor = None
        if info.is_main:
            monitor = Monitor(
                self.run_dir, sch.max_steps, start_step, cfg.logging.progress,
                cfg.logging.tensorboard, cfg.logging.every_steps, self.console,
            )  # fmt: skip
        records: list[dict] = []
        n_micro = sampler.micro_batches_per_rank
        batches = iter(loader)
        meter = ComputeMeter(device, "bf16" if bf16 else "fp32", "samples")
        if info.world_size > 1:
            meter.note(f"CPU time and energy of rank {info.rank} of {info.world_size} only")
        meter.start()
        try:
            for step in range(start_step, sch.max_steps):
                t0 = time.perf_counter()
                timer = StepTimer(device, sync=False)
                sums = torch.zeros(len(LOSS_KEYS) + 1, dtype=torch.float64, device=device)
                for j in range(n_micro):
                    with timer.section("data"):
                        batch = next(batches)
                    if batch.step != step:
                        raise RuntimeError(f"loader out of step: got {batch.step}, expected {step}")
                    for e in batch.errors:
                        log.warning("rank %d: bad sample skipped: %s", info.rank, e)
                    sums[-1] += len(batch.errors)
                    batch = batch.to(device, non_blocking=True)
                    with timer.section("masking"):
                        inputs, va, vb = prepare_micro_batch(
                            batch, tc.seed, cfg.masking.encode_ratio, cfg.masking.decode_ratio,
                            model_mods,
                        )
                    seeds = micro_batch_seeds(tc.seed, step, batch.micro_index)
                    torch.manual_seed(seeds["drop_path"])  # drop-path draws, rank-independent
                    with D.gradient_sync(wrapped, j == n_micro - 1):
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                            out = wrapped(
                                inputs, batch.timestamps, batch.patch_size,
                                va.token_mask, vb.token_mask, timer=timer,
                            )  # fmt: skip
                        if not bool(torch.isfinite(out["loss"].detach())):
                            # Name the samples: one bad file must not cost a search.
                            files = [str(manifest.path(int(i))) for i in batch.indices.tolist()]
                            raise FloatingPointError(
                                f"step {step + 1}: loss is {float(out['loss'])} on the samples "
                                f"{files}; check them with `geolatent data inspect FILE` "
                                "(non-finite or out-of-range values)")
                        with timer.section("backward"):
                            (out["loss"] / n_micro).backward()
                    sums[: len(LOSS_KEYS)] += torch.stack([out[k].detach() for k in LOSS_KEYS])
                max_norm = opt_cfg.grad_clip if opt_cfg.grad_clip is not None else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                if hasattr(grad_norm, "full_tensor"):  # FSDP2 DTensor
                    grad_norm = grad_norm.full_tensor()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                sums[: len(LOSS_KEYS)] /= n_micro
                D.all_reduce_(sums[: len(LOSS_KEYS)], info, "mean")
                D.all_reduce_(sums[-1:], info, "sum")
                values = sums.tolist()
                bad_total += int(values[-1])
                done = step + 1
                elapsed = time.perf_counter() - t0
                plan = sampler.plan(step)
                rec = {"step": done, **{k: values[i] for i, k in enumerate(LOSS_KEYS)}}
                rec.update(
                    lr=lr, grad_norm=float(grad_norm), step_time_s=elapsed,
                    samples_per_s=tc.global_batch_size / elapsed,
                    patch_size=plan.patch_size, grid=plan.grid, timesteps=plan.timesteps,
                    bad_samples=int(values[-1]), bad_samples_total=bad_total,
                    **{f"{k}_s": v for k, v in timer.seconds.items()},
                )  # fmt: skip
                if not math.isfinite(rec["loss"]):
                    raise FloatingPointError(f"step {done}: loss is {rec['loss']}")
                records.append(rec)
                meter.add(tc.global_batch_size)
                if monitor is not None:
                    monitor.log(rec)
                if done % cfg.checkpoint.every_steps == 0 or done == sch.max_steps:
                    self._checkpoint(
                        info, done, wrapped, optimizer, scheduler, model.config, state_opts,
                        bad_total,
                    )  # fmt: skip
        finally:
            if monitor is not None:
                monitor.close()
            del batches
        if info.is_main:  # this session's cost, beside metrics.jsonl
            meter.write(self.run_dir / "compute.json")
        return records

    def _checkpoint(
        self,
        info: D.DistInfo,
        step: int,
        wrapped: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        model_config: ModelConfig,
        options: StateDictOptions,
        bad_total: int,
    ) -> None:
        # Gathering full state dicts is collective: every rank takes part, rank 0 writes.
        model_sd, optim_sd = get_state_dict(wrapped, optimizer, options=options)
        rngs = [None] * info.world_size
        if info.distributed:
            torch.distributed.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if info.is_main:
            prefix = "model."
            state = {k[len(prefix) :]: v for k, v in model_sd.items() if k.startswith(prefix)}
            export = model_from_state(model_config, state)
            train_state = {
                "step": step,
                "optimizer": optim_sd,
                "scheduler": scheduler.state_dict(),
                "rng": rngs,
                "data": {
                    "next_step": step,
                    "samples_seen": step * self.config.train.global_batch_size,
                },
                "bad_samples": bad_total,
                "world_size": info.world_size,
            }
            save_checkpoint(
                self.run_dir, step, export, train_state, self.config.checkpoint.keep_last
            )
        D.barrier(info)
