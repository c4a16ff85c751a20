"""Student-teacher with a global autoencoder, after EfficientAD (README.md here)."""

from edge_anomaly.templates.base import Template
from edge_anomaly.templates.student_teacher.augmentation import penalty_images, shifted_copies
from edge_anomaly.templates.student_teacher.params import StudentTeacherParams
from edge_anomaly.templates.student_teacher.scorer import StudentTeacherScorer
from edge_anomaly.templates.student_teacher.training import hard_feature_loss, stage_weights

TEMPLATE = Template("student_teacher", "student and autoencoder trained to predict the backbone; catches misplaced, "
                    "swapped and missing parts, no memory bank", StudentTeacherScorer)

__all__ = ["TEMPLATE", "StudentTeacherParams", "StudentTeacherScorer", "hard_feature_loss", "penalty_images",
           "shifted_copies", "stage_weights"]
