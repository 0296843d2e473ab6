"""Reading YAML config files: one place for the checks every config loader needs."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml_mapping(path: str | Path) -> dict:
    """The top-level mapping of a YAML file.

    Raises:
        ValueError: the file cannot be read, is not valid YAML, or is not a mapping (the message
            names the file).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return raw
