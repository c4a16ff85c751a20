"""Hyperparameters from a YAML file and ``--set key=value`` overrides, validated in one place."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge_anomaly.templates import TemplateParams, get_template
from runtime.schema import read_yaml, validate


def parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` strings to a dict; values are read as YAML (so 0.1, [256, 256], true work)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return overrides


DEFAULT_TEMPLATE = "patchcore"


def config_template(config_file: str | Path | None) -> str | None:
    """The ``template:`` a config file names, if any (it then chooses the template, not the automatic search)."""
    if config_file is None or not Path(config_file).is_file():
        return None
    loaded = yaml.safe_load(Path(config_file).read_text()) or {}
    return loaded.get("template") if isinstance(loaded, dict) else None


def load_params(template_name: str | None, config_file: str | Path | None = None,
                overrides: list[str] | None = None) -> tuple[str, TemplateParams]:
    """(template name, validated hyperparameters). The template comes from the argument, else
    from the file's ``template:`` key, else the default; a conflict between the two is an error."""
    values: dict = {}
    sources = []
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of hyperparameter: value")
        in_file = loaded.pop("template", None)
        if template_name and in_file and in_file != template_name:
            raise ValueError(f"{path}: template {in_file!r} conflicts with --template {template_name!r}")
        template_name = template_name or in_file
        values.update(loaded)
        sources.append(str(path))
    if overrides:
        values.update(parse_overrides(overrides))
        sources.append("--set")
    template_name = template_name or DEFAULT_TEMPLATE
    source = " and ".join(sources) or "the defaults"
    return template_name, validate(get_template(template_name).params, values, source, "hyperparameters")
