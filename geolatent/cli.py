"""Command-line interface: thin wrappers that parse arguments and call the library.

Each area owns its commands in its own module (``geolatent/<area>/cli.py``) and is mounted here;
no logic lives only in the CLI.
"""

from __future__ import annotations

import typer

from geolatent.app.cli import register as register_app
from geolatent.data.cli import app as data_app
from geolatent.evals.cli import register as register_evals
from geolatent.inference.cli import register as register_inference
from geolatent.platform.cli import register as register_platform
from geolatent.pretrain.cli import register as register_pretrain

app = typer.Typer(
    name="geolatent",
    help="OlmoEarth-compatible Earth-observation foundation model: embed, pretrain, evaluate, map.",
    no_args_is_help=True,
    add_completion=False,
)

register_inference(app)  # embed, demo
register_pretrain(app)  # pretrain
register_evals(app)  # eval
register_platform(app)  # finetune, predict
register_app(app)  # serve
app.add_typer(data_app, name="data", help="Build pretraining samples and windows from rasters.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
