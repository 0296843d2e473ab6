"""CLI command ``geolatent pretrain`` (parsing and reporting only; the work is in the trainer)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)

PRETRAIN_HELP = """Pretrain (or resume) a model with the OlmoEarth v1 Latent MIM Lite recipe.

\b
Examples:
  geolatent pretrain --config configs/pretrain/smoke.yaml --run-dir runs/smoke
  geolatent pretrain --config configs/pretrain/base.yaml --run-dir runs/base \\
      data.root=/data/olmoearth_h5 train.micro_batch_size=16
  geolatent pretrain --run-dir runs/base --resume            # continue the last checkpoint
  torchrun --nproc_per_node 8 -m geolatent.cli pretrain --config ... train.parallel=fsdp

\b
Overrides are dotted key=value pairs with YAML values (optimizer.lr=1e-4,
data.modalities=\\[sentinel2_l2a,sentinel1]). The validated config is saved as
RUN_DIR/config.yaml; metrics go to RUN_DIR/metrics.jsonl and checkpoints to
RUN_DIR/checkpoints/step_*/ (its model/ folder loads with geolatent.load_model).
With --resume and no --config, the run's saved config is used.
"""


def register(app: typer.Typer) -> None:
    """Add the ``pretrain`` command to ``app``."""

    @app.command("pretrain", help=PRETRAIN_HELP)
    def pretrain(
        run_dir: Annotated[Path, typer.Option("--run-dir", help="Output / run directory.")],
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="Pretraining YAML config.")
        ] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")
        ] = False,
        overrides: Annotated[
            list[str] | None, typer.Argument(help="key=value config overrides.")
        ] = None,
    ) -> None:
        from geolatent.data.run import output_error
        from geolatent.pretrain.config import CONFIG_NAME, ConfigError, load_config
        from geolatent.pretrain.trainer import Trainer
        from geolatent.runtime import DeviceError

        if config is None:
            saved = run_dir / CONFIG_NAME
            if not (resume and saved.exists()):
                console.print(
                    f"[red]error:[/] --config is required (unless --resume finds {saved})"
                )
                raise typer.Exit(2)
            config = saved
        try:
            cfg = load_config(config, overrides or [])
            records = Trainer(cfg, run_dir, resume=resume, console=console).fit()
        except (ConfigError, DeviceError, FileNotFoundError, FileExistsError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        except (ValueError, FloatingPointError) as e:  # bad data (no usable sample, NaN loss)
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(1) from None
        except OSError as e:  # a full disk or an unwritable run dir, at any write of the run
            clear = output_error(e, e.filename or run_dir)
            if clear is e:
                raise
            console.print(f"[red]error:[/] {clear}")
            raise typer.Exit(1) from None
        if os.environ.get("RANK", "0") != "0":
            return  # under torchrun only the main rank reports
        if records:
            last = records[-1]
            console.print(
                f"done: step {last['step']}, loss {last['loss']:.4f}; "
                f"checkpoints in {run_dir / 'checkpoints'}"
            )
        else:
            console.print("nothing to do: the run already reached schedule.max_steps")
