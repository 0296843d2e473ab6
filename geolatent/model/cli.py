"""CLI command ``geolatent models``: the known OlmoEarth releases and which are cached here."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

MODELS_HELP = """List the OlmoEarth releases geolatent knows: Hugging Face id, version, size,
embedding widths, and which revisions are in the local Hugging Face cache (HF_HOME).

\b
Any id works wherever a model is taken (--model, geolatent.load_model), e.g.
  geolatent embed --model allenai/OlmoEarth-v1_2-Base ...
  geolatent embed --model OlmoEarth-v1_3-Base ...
Offline (HF_HUB_OFFLINE=1) only cached releases load.
"""


def model_rows() -> list[dict]:
    """One dict per known release: id, version, size, widths, cached revisions."""
    from geolatent.model.hub import KNOWN_RELEASES, cached_revisions

    return [
        {
            "id": r.repo_id,
            "version": r.version,
            "size": r.size,
            "embedding_dim": r.embedding_dim,
            "location_embedding_dim": r.location_embedding_dim,
            "cached_revisions": cached_revisions(r.repo_id),
        }
        for r in KNOWN_RELEASES
    ]


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to ``app``."""

    @app.command("models", help=MODELS_HELP)
    def models(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    ) -> None:
        rows = model_rows()
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row))
            return
        table = Table(title="OlmoEarth releases")
        for col in ("id", "version", "size", "embedding", "cached"):
            table.add_column(col)
        for row in rows:
            width = str(row["embedding_dim"])
            if row["location_embedding_dim"]:
                width += f" (location {row['location_embedding_dim']})"
            cached = ", ".join(c[:10] for c in row["cached_revisions"]) or "no"
            table.add_row(row["id"], row["version"], row["size"], width, cached)
        Console(width=160).print(table)
