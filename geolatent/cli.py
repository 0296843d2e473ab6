"""Command-line interface: thin wrappers that parse arguments and call the library.

Each area owns its commands in its own module (``geolatent/<area>/cli.py``) and is mounted here;
no logic lives only in the CLI.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="geolatent",
    help="OlmoEarth-compatible Earth-observation foundation model: embed, pretrain, evaluate, map.",
    no_args_is_help=True,
    add_completion=False,
)


def _mount() -> None:
    # Imported here so `geolatent --help` stays fast and one broken area cannot hide the others.
    from geolatent.inference.cli import register as register_inference

    register_inference(app)
    try:
        from geolatent.data.cli import app as data_app
    except ImportError:  # area not built yet
        data_app = None
    if data_app is not None:
        app.add_typer(data_app, name="data", help="Build pretraining samples and windows from rasters.")


_mount()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
