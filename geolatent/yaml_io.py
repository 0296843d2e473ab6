"""Kept only for ``geolatent/archive/build.py`` (another branch owns it): the one YAML reader is
:func:`geolatent.config.read_yaml_mapping`. Delete this module once archive imports that."""

from geolatent.config import read_yaml_mapping

__all__ = ["read_yaml_mapping"]
