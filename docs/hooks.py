"""MkDocs hooks: the pages whose facts live in the code or elsewhere in the repository are filled in at build time.

- ``station/configuration.md``: the ``station.yaml`` reference, rendered from the pydantic models in
  ``runtime/station/config.py`` (names, types, bounds, defaults, the ``Field`` descriptions), so it cannot drift.
- ``index.md``: the README itself, its GitHub links (``docs/x.md``, ``ARCHITECTURE.md``) rewritten for the site.
- ``boards.md``: ``devices/README.md`` (package data, so it stays there) and every ``devices/results/*.md``.
- ``export.md``: the parity check's default tolerances, from ``exporters/parity.py``.

``tests/test_docs.py`` renders the same functions; ``mkdocs build --strict`` (in ``.ci/run``) checks every link.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- generated: {} -->"
README_LINKS = {"docs/": "", "ARCHITECTURE.md": "architecture.md", "devices/README.md": "boards.md"}
_BOUNDS = {annotated_types.Ge: "≥", annotated_types.Gt: ">", annotated_types.Le: "≤", annotated_types.Lt: "<",
           annotated_types.MinLen: "at least", annotated_types.MaxLen: "at most"}


def _type_name(annotation: object) -> str:
    """A YAML reader's name for a field's type: ``path``, ``secret``, ``"a" | "b"``, ``list of …``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = args[0]
        return "secret" if getattr(inner, "__name__", "") == "SecretRef" else _type_name(inner)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args if arg is not type(None))
    if origin is typing.Literal:
        return " \\| ".join(f'`{value}`' for value in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(arg) for arg in args) + "]"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if dataclasses.is_dataclass(annotation):
        return "{" + ", ".join(field.name for field in dataclasses.fields(annotation)) + "}"
    return getattr(annotation, "__name__", str(annotation))


def _yaml_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if dataclasses.is_dataclass(value):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in dataclasses.asdict(value).items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def _default(field: object) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        made = field.default_factory()
        return "" if isinstance(made, dict) and not made and _section(field.annotation) else f"`{_yaml_value(made)}`"
    return "" if field.default is PydanticUndefined else f"`{_yaml_value(field.default)}`"


def _section(annotation: object) -> type | None:
    """The nested model a field holds, itself or in a list or an optional; else None (secrets are values)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None if annotation.__name__ == "SecretRef" else annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        return next((found for arg in typing.get_args(annotation) if (found := _section(arg))), None)
    return None


def _bounds(field: object) -> str:
    parts = [f"{word} {getattr(rule, dataclasses.fields(rule)[0].name)}" for rule in field.metadata
             for kind, word in _BOUNDS.items() if isinstance(rule, kind)]
    return (", " + ", ".join(parts)) if parts else ""


def _doc_line(model: type) -> str:
    return (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


def _markdown_cell(text: str) -> str:
    """Docstring text as a table cell: ``code`` as `code`, ``<`` outside code escaped, ``|`` escaped."""
    spans = text.replace("``", "`").split("`")
    spans = [span if i % 2 else span.replace("<", "&lt;") for i, span in enumerate(spans)]
    return "`".join(spans).replace("|", "\\|")


def config_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every field of ``model``, nested sections flattened as ``a.b``."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        held = section or (field.annotation if dataclasses.is_dataclass(field.annotation) else None)
        meaning = _markdown_cell(field.description or (_doc_line(held) if held else ""))
        is_list = typing.get_origin(field.annotation) is list or any(
            typing.get_origin(arg) is list for arg in typing.get_args(field.annotation))
        rows.append((f"`{key}`", _type_name(field.annotation) + _bounds(field), _default(field), meaning))
        if section is not None:
            rows += config_rows(section, f"{key}[]." if is_list else f"{key}.")
    return rows


def config_reference() -> str:
    """The ``station.yaml`` table, from ``runtime.station.config.StationConfig``."""
    from runtime.station.config import StationConfig

    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in config_rows(StationConfig)]
    return "\n".join(lines) + "\n"


def readme_for_site(text: str) -> str:
    """The README with its GitHub-relative links (``docs/…``, root files) pointing at the site's pages."""
    for github, site in README_LINKS.items():
        text = text.replace(f"]({github}", f"]({site}")
    return text


def _shift_headings(text: str, levels: int) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", text, flags=re.MULTILINE)


def boards_page() -> str:
    """``devices/README.md`` and every board's measured results, with the links between them as anchors."""
    devices = ROOT / "devices"
    text = (devices / "README.md").read_text()
    results = sorted((devices / "results").glob("*.md"))
    for result in results:
        text = text.replace(f"](results/{result.name})", f"](#{result.stem}-measured-results)")
    parts = [text, "## Measured results per board\n"]
    parts += [_shift_headings(result.read_text(), 2) for result in results]
    return "\n\n".join(parts)


def parity_tolerances() -> str:
    """The export's default parity tolerances per precision, from ``exporters.parity.DEFAULT_TOLERANCES``."""
    from exporters.parity import DEFAULT_TOLERANCES

    lines = ["| precision | max heatmap diff | min rank corr | max image AUROC drop | max pixel AUROC drop |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {precision} | {t.max_heatmap_diff} | {t.min_score_rank_corr} | {t.max_image_auroc_drop} | "
              f"{t.max_pixel_auroc_drop} |" for precision, t in DEFAULT_TOLERANCES.items()]
    return "\n".join(lines) + "\n"


GENERATED = {"station-config": config_reference, "devices": boards_page, "parity-tolerances": parity_tolerances}
# a page that is wholly another file on the site (its own text is what GitHub shows in docs/)
WHOLE_PAGES = {"readme": lambda: readme_for_site((ROOT / "README.md").read_text())}


def fill(markdown: str) -> str:
    """Replace every ``<!-- generated: NAME -->`` line with what ``GENERATED[NAME]`` renders (``WHOLE_PAGES``: the
    page)."""
    for name, render in WHOLE_PAGES.items():
        if MARKER.format(name) in markdown:
            return render()
    for name, render in GENERATED.items():
        if MARKER.format(name) in markdown:
            markdown = markdown.replace(MARKER.format(name), render())
    return markdown


def on_page_markdown(markdown: str, page: object, config: object, files: object) -> str:
    return fill(markdown)
