"""Command-line interface: thin wrappers that parse arguments and call the library.

Each area owns its commands in its own module (``geolatent/<area>/cli.py``) and is mounted here;
no logic lives only in the CLI.
"""

from __future__ import annotations

import sys

import typer

from geolatent.app.cli import register as register_app
from geolatent.archive.cli import app as archive_app
from geolatent.data.cli import app as data_app
from geolatent.data.imagery_cli import register as register_imagery
from geolatent.evals.cli import register as register_evals
from geolatent.inference.cli import register as register_inference
from geolatent.model.cli import register as register_models
from geolatent.platform.cli import register as register_platform
from geolatent.pretrain.cli import register as register_pretrain

app = typer.Typer(
    name="geolatent",
    help="OlmoEarth-compatible Earth-observation foundation model: embed, pretrain, evaluate, map.",
    no_args_is_help=True,
    add_completion=False,
    # Rich draws errors in a box wrapped at the terminal width (80 columns when not a terminal),
    # which splits messages mid-sentence in logs and pipes: plain click errors stay on one line.
    rich_markup_mode="rich" if sys.stderr.isatty() else None,
)

register_inference(app)  # embed, demo
register_pretrain(app)  # pretrain
register_evals(app)  # eval
register_platform(app)  # finetune, predict
register_models(app)  # models
register_app(app)  # serve
app.add_typer(data_app, name="data", help="Build pretraining samples and windows from rasters.")
register_imagery(app)  # imagery search, imagery fetch
app.add_typer(archive_app, name="archive", help="Embedding archives and similar-place search.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
