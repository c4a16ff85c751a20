"""The template registry: name -> hyperparameters and scorer, one package per template.

A template's package (``templates/<name>/``) holds its hyperparameters, its scorer and a README
pointing to its page under docs/templates/; what the rest of the code asks of it is declared on
the base classes in ``base.py``. Registering one is one line below. Importing this package
imports torch; the CLI only does so for commands that train.
"""

from __future__ import annotations

from edge_anomaly.templates import padim, patchcore, student_teacher
from edge_anomaly.templates.base import (
    EmbeddingScorer,
    ImageTrainedScorer,
    MemoryBankScorer,
    Scorer,
    Template,
    TemplateParams,
)
from edge_anomaly.templates.padim import PadimParams, PadimScorer
from edge_anomaly.templates.patchcore import PatchCoreParams, PatchCoreScorer
from edge_anomaly.templates.student_teacher import StudentTeacherParams, StudentTeacherScorer

TEMPLATES: dict[str, Template] = {package.TEMPLATE.name: package.TEMPLATE
                                  for package in (patchcore, padim, student_teacher)}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose from {', '.join(TEMPLATES)}") from None


def updatable_templates() -> list[str]:
    """Templates whose models ``edge-anomaly update`` can add reviewed normal images to."""
    return [name for name, template in TEMPLATES.items() if issubclass(template.scorer, MemoryBankScorer)]


__all__ = ["TEMPLATES", "EmbeddingScorer", "ImageTrainedScorer", "MemoryBankScorer", "PadimParams", "PadimScorer",
           "PatchCoreParams", "PatchCoreScorer", "Scorer", "StudentTeacherParams", "StudentTeacherScorer", "Template",
           "TemplateParams", "get_template", "updatable_templates"]
