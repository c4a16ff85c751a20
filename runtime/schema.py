"""One pydantic base and one error report for every file a person or a tool writes for us.

The model config (``edge_anomaly.config``), the station config (``runtime.station.config``),
device profiles (``devices.profile``) and bundle manifests (``runtime.manifest``) all validate
through :func:`validate`, so a mistake is reported the same way everywhere: the file, then one
line per bad field with its dotted path, what is wrong and the value given (never a secret's).
It lives in the runtime (torch-free, only pydantic and pyyaml) so that all four can use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

Model = TypeVar("Model", bound=BaseModel)


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo names its field instead of silently meaning the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(StrictModel):
    """A section of a file we write (bundle manifest, model card); fields listed in ``_omitted_when_none`` are
    left out of the JSON when unset."""

    _omitted_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        data = handler(self)
        return {key: value for key, value in data.items() if value is not None or key not in self._omitted_when_none}


def describe_errors(exc: ValidationError, secret_fields: Iterable[str] = ()) -> list[str]:
    """One line per problem: ``dotted.field: message (got value)``.

    The value is left out where it says nothing new (a missing field, a whole section, a message
    that already ends ``got <value>``) or must not be shown (any field named in ``secret_fields``).
    """
    secrets = set(secret_fields)
    lines = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "<top>"
        given = error.get("input")
        hidden = (error["type"] == "missing" or isinstance(given, dict) or f"got {given!r}" in error["msg"]
                  or bool(secrets & {str(part) for part in error["loc"]}))
        lines.append(f"{location}: {error['msg']}" + ("" if hidden else f" (got {given!r})"))
    return lines


def validate(model: type[Model], data: object, source: str, what: str, error: type[Exception] = ValueError, *,
             context: dict | None = None, secret_fields: Iterable[str] = ()) -> Model:
    """``data`` as a ``model``, or ``error("<source>: invalid <what>:\\n  field: problem ...")``."""
    if not isinstance(data, dict):
        raise error(f"{source}: invalid {what}: expected a mapping at the top, got {type(data).__name__}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = "\n  ".join(describe_errors(exc, secret_fields))
        raise error(f"{source}: invalid {what}:\n  {problems}") from None


def decode_json_object(text: str | bytes, source: str, what: str, max_bytes: int,
                       error: type[Exception] = ValueError) -> dict:
    """The JSON object in ``text`` (a file we wrote: manifest, model card), bounded in size before it is decoded."""
    if len(text) > max_bytes:
        raise error(f"{source}: {len(text)} bytes is too large for a {what} (limit {max_bytes})")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{source}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{source}: expected a JSON object, got {type(data).__name__}")
    return data


def upgrade(data: dict, current: int, migrations: dict[int, Callable[[dict], dict]], source: str,
            error: type[Exception] = ValueError) -> dict:
    """``data`` upgraded to ``schema_version`` ``current`` one version at a time, by ``migrations``
    (version -> the step to the next)."""
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > current:
        raise error(f"{source}: schema_version {version} is newer than this edge-anomaly reads "
                    f"({current}): upgrade edge-anomaly on this box")
    while version != current:
        if version not in migrations:
            raise error(f"{source}: schema_version {version!r} is not supported "
                        f"(this edge-anomaly reads {min(migrations, default=current)} to {current})")
        data = migrations[version](data)
        version = data["schema_version"]
    return data


def read_yaml(path: Path, error: type[Exception] = ValueError) -> object:
    """The YAML document in ``path``; an unreadable file or bad YAML is ``error`` naming the file."""
    import yaml  # only the config readers need pyyaml, not every importer of this module

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
