"""The template registry: name -> hyperparameters and scorer.

Importing this package imports torch; the CLI only does so for commands that train.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_anomaly.templates.base import Scorer, TemplateParams
from edge_anomaly.templates.padim import PadimParams, PadimScorer
from edge_anomaly.templates.patchcore import PatchCoreParams, PatchCoreScorer
from edge_anomaly.templates.student_teacher import StudentTeacherParams, StudentTeacherScorer


@dataclass(frozen=True)
class Template:
    name: str
    summary: str
    params: type[TemplateParams]
    scorer: type[Scorer]


TEMPLATES: dict[str, Template] = {
    "patchcore": Template("patchcore", "coreset memory bank of patch features, nearest-neighbour distance",
                          PatchCoreParams, PatchCoreScorer),
    "padim": Template("padim", "Gaussian per feature-map position, Mahalanobis distance; only for aligned parts "
                      "(fixtured, same place every time): parts that move or vary in place break it",
                      PadimParams, PadimScorer),
    "student_teacher": Template("student_teacher", "student and autoencoder trained to predict the backbone; "
                                "catches misplaced, swapped and missing parts, no memory bank",
                                StudentTeacherParams, StudentTeacherScorer),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template {name!r}; choose from {', '.join(TEMPLATES)}") from None
