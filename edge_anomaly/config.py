"""Hyperparameters from a YAML file and ``--set key=value`` overrides, validated in one place."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from edge_anomaly.templates import TemplateParams, get_template


def parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` strings to a dict; values are read as YAML (so 0.1, [256, 256], true work)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected key=value")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return overrides


def validation_message(exc: ValidationError, source: str) -> str:
    """One line per bad field, naming the field, the value given and what is wrong."""
    lines = [f"invalid hyperparameters in {source}:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(root)"
        given = f" (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else ""
        lines.append(f"  {field}: {error['msg']}{given}")
    return "\n".join(lines)


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
    source = "defaults"
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of hyperparameter: value")
        in_file = loaded.pop("template", None)
        if template_name and in_file and in_file != template_name:
            raise ValueError(f"{path}: template {in_file!r} conflicts with --template {template_name!r}")
        template_name = template_name or in_file
        values.update(loaded)
        source = str(path)
    if overrides:
        values.update(parse_overrides(overrides))
        source += " and --set"
    template_name = template_name or DEFAULT_TEMPLATE
    template = get_template(template_name)
    try:
        return template_name, template.params.model_validate(values)
    except ValidationError as exc:
        raise ValueError(validation_message(exc, source)) from None
