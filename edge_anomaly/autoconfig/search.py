"""Choosing the template and its key hyperparameters by how well candidates separate synthetic defects.

Without defect images, the training images are split: most fit each candidate, the rest are
kept normal and also receive synthetic defects (see :mod:`synthetic_defects`). A candidate
scores by its image AUROC on that set and by its recall at a strict threshold (the highest
held-out normal score), as a line would run it. Its cost is its graph's floating-point
operations per image, counted, not timed, so a loaded machine cannot reorder the candidates;
one timing of the default (the fastest of a few calls) turns them into milliseconds on this
machine. Candidates are tried in order of preference, the default first; among those that
meet the latency budget and the board's input limits, a later one wins only when it is
clearly better, and a costlier one or one of another template only when it is clearly better
on both measures (see :func:`best_trial`). With ``--defects DIR``
the real defect images replace the synthetic ones. The winner is then fitted on every image
and calibrated as usual.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.flop_counter import FlopCounterMode

from edge_anomaly.autoconfig.machine_rate import LatencyEstimate
from edge_anomaly.autoconfig.synthetic_defects import synthetic_defect_set
from edge_anomaly.config import config_template, load_params
from edge_anomaly.data.folders import crop_region
from edge_anomaly.data.training_set import TrainingSet
from edge_anomaly.graph import AnomalyGraph
from edge_anomaly.model import TrainedModel, build_graph, run_graph
from edge_anomaly.progress import SilentProgress, make_progress
from edge_anomaly.templates import TemplateParams, get_template
from edge_anomaly.training import fit_model, split_holdout, with_input_size
from runtime.preprocess import frame_to_input

log = logging.getLogger(__name__)

SizeCheck = Callable[[tuple[int, int]], "str | None"]
MAX_FIT_IMAGES = 100  # candidates are compared on a bounded subset: a few minutes on 2 cores
MAX_CHECK_IMAGES = 30  # held-out normals, each also given synthetic defects
DEFECTS_PER_IMAGE = 2


@dataclass(frozen=True)
class Candidate:
    """A template and the hyperparameters it is tried with (besides the user's own)."""

    name: str
    template: str
    overrides: dict = field(default_factory=dict)
    max_input_pixels: int = 256 * 256


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("patchcore", "patchcore"),
    Candidate("patchcore top-3", "patchcore", {"top_k": 3}),
    Candidate("patchcore deep", "patchcore", {"layers": ["stage4", "stage6"]}),
    Candidate("patchcore 384", "patchcore", {}, 384 * 384),
    Candidate("padim", "padim"),
)
# Trained by gradient descent, the student-teacher costs minutes per try, and a short run says
# little (synthetic AUROC 0.49 on the boards after 100 steps), so it is tried only when asked
# (fit --thorough), at its full training length.
THOROUGH_CANDIDATES: tuple[Candidate, ...] = (*CANDIDATES, Candidate("student-teacher", "student_teacher"))


@dataclass
class Trial:
    candidate: str
    template: str
    input_size: tuple[int, int]
    synthetic_auroc: float
    recall_at_strict: float  # share of defects above the highest held-out normal score
    gflop: float  # floating-point operations of one image through the graph, counted (load-independent)
    latency_ms: float  # estimated on this machine: gflop at its rate (machine_rate)
    seconds: float  # fit and scoring time of this candidate
    within_budget: bool
    error: str | None = None

    @property
    def eligible(self) -> bool:
        return self.within_budget and self.error is None


# A few dozen synthetic defects cannot resolve smaller differences than these.
CLEAR_AUROC_GAIN = 0.02
CLEAR_RECALL_GAIN = 0.1
COSTLIER = 1.3  # a candidate with this many times the operations per image of the best so far is costlier


def best_trial(trials: list[Trial]) -> Trial | None:
    """The winner: candidates come in order of preference (the default first), and a later one
    replaces the best so far only when it separates the synthetic defects clearly better. Of the
    same template and at no more than COSTLIER times the cost (counted operations per image),
    either measure may show it: AUROC higher by CLEAR_AUROC_GAIN, or recall at the strict
    threshold higher by CLEAR_RECALL_GAIN at an AUROC as high. A costlier candidate, or one of
    another template, must be clearly better on both:

    - a larger input that ranks the synthetic defects a little better but catches no more of them
      at the line's threshold is not worth twice the latency on every frame (bottle: PatchCore at
      384 px, 4.7 GFLOP against 1.3, AUROC 0.984 against 0.937, recall 0.80 against 0.82);
    - the synthetic defects judge how a template ranks images, not how its threshold is
      calibrated, and templates differ there: on bottle PaDiM (AUROC 0.982, recall 0.85, half
      the operations) ranks every real defect above every good part, yet its calibrated
      threshold misses 7 of 63, where PatchCore misses none.
    """
    best = None
    for trial in (t for t in trials if t.eligible):
        if best is None:
            best = trial
            continue
        auroc_gain = trial.synthetic_auroc - best.synthetic_auroc
        recall_gain = trial.recall_at_strict - best.recall_at_strict
        if trial.gflop > COSTLIER * best.gflop or trial.template != best.template:
            clearly_better = auroc_gain >= CLEAR_AUROC_GAIN and recall_gain >= CLEAR_RECALL_GAIN
        else:
            clearly_better = auroc_gain >= CLEAR_AUROC_GAIN or (auroc_gain > -CLEAR_AUROC_GAIN
                                                                 and recall_gain >= CLEAR_RECALL_GAIN)
        if clearly_better:
            best = trial
    return best


@dataclass
class Choice:
    template: str
    params: TemplateParams
    trials: list[Trial]
    defects: str  # "synthetic" or the defect folder
    seconds: float = 0.0  # the whole search: reading, synthetic defects, every candidate

    def table(self) -> str:
        lines = ["| candidate | template | input (h x w) | AUROC | recall at strict threshold | GFLOP/image | "
                 "est. ms/image | search s | chosen |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        best = best_trial(self.trials)
        for t in self.trials:
            note = t.error or ("" if t.within_budget else "over latency budget")
            lines.append(f"| {t.candidate} | {t.template} | {t.input_size[0]} x {t.input_size[1]} | "
                         f"{t.synthetic_auroc:.3f} | {t.recall_at_strict:.2f} | {t.gflop:.2f} | {t.latency_ms:.1f} | "
                         f"{t.seconds:.1f} | {'yes' if t is best else note} |")
        return "\n".join(lines)

    def announcement(self) -> str:
        """The table and one line naming the chosen candidate, as ``fit`` and the demo print them."""
        height, width = self.params.input_size
        judged = "synthetic defects" if self.defects == "synthetic" else self.defects
        return (f"{self.table()}\n\nautomatic configuration chose the candidate {self.record()['chosen']!r} "
                f"({self.template}, input {width}x{height}; judged on {judged})\n")

    def record(self) -> dict:
        best = best_trial(self.trials)
        return {"defects": self.defects, "chosen": best.candidate if best else None, "seconds": round(self.seconds, 1),
                "trials": [asdict(t) for t in self.trials]}


def _candidate_params(candidate: Candidate, config_file: str | Path | None, overrides: list[str]) -> TemplateParams:
    """The user's settings (which always win) on top of the candidate's."""
    _, params = load_params(candidate.template, config_file, overrides)
    user_keys = params.model_fields_set
    wanted = {**candidate.overrides, "max_input_pixels": candidate.max_input_pixels}
    update = {key: value for key, value in wanted.items() if key not in user_keys}
    return get_template(candidate.template).params.model_validate({**params.model_dump(), **update})


def _gflop(graph: AnomalyGraph, image: np.ndarray) -> float:
    """Floating-point operations of one image through the graph (convolutions, the bank search),
    counted by PyTorch: the same on every run, whatever else the machine is doing."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        graph(torch.from_numpy(image[None]))
    return counter.get_total_flops() / 1e9


def _try(candidate: Candidate, params: TemplateParams, frames: list[np.ndarray], fit_idx: np.ndarray,
         normal_idx: np.ndarray, defect_frames: list[np.ndarray], max_latency_ms: float | None,
         size_problem: SizeCheck | None, latency: LatencyEstimate, fitted: dict[str, AnomalyGraph]) -> Trial:
    """Fit and score one candidate (``fitted``: the graphs fitted so far, see :func:`_fitted_graph`)."""
    started = time.perf_counter()
    size = tuple(params.input_size)
    problem = size_problem(size) if size_problem is not None else None
    if problem is not None:
        return _left_out(candidate, size, problem)

    def inputs(images: list[np.ndarray]) -> np.ndarray:
        return np.stack([frame_to_input(image, size) for image in images])

    graph = _fitted_graph(candidate.template, params, lambda: inputs([frames[i] for i in fit_idx]), fitted)
    normal = run_graph(graph, inputs([frames[i] for i in normal_idx]), params.batch_size)[1]
    defect = run_graph(graph, inputs(defect_frames), params.batch_size)[1]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(defect))]
    auroc = float(roc_auc_score(labels, np.r_[normal, defect]))
    recall = float(np.mean(defect > normal.max()))
    image = inputs(frames[:1])[0]
    gflop = _gflop(graph, image)
    latency_ms = latency(graph, image, gflop)
    within = max_latency_ms is None or latency_ms <= max_latency_ms
    return Trial(candidate.name, candidate.template, size, auroc, recall, gflop, latency_ms,
                 time.perf_counter() - started, within)


def _fitted_graph(template_name: str, params: TemplateParams, fit_inputs: Callable[[], np.ndarray],
                  fitted: dict[str, AnomalyGraph]) -> AnomalyGraph:
    """The candidate's graph fitted on ``fit_inputs()``. One fitted before with the same hyperparameters but for the
    template's ``scoring_params`` is the same fit, so it is reused with this candidate's (PatchCore top-3: the
    default's bank, each image scored by its three worst patches): the search then costs one fit less."""
    template = get_template(template_name)
    fitting = {key: value for key, value in params.model_dump(mode="json").items()
               if key not in template.scorer.scoring_params}
    key = json.dumps([template_name, fitting], sort_keys=True)
    if key in fitted:
        graph = fitted[key]
        graph.scorer.params = params
        return graph
    graph = build_graph(template_name, params, pretrained=True)
    graph.scorer.fit_images(fit_inputs(), graph.extractor, SilentProgress())
    graph.eval()  # a scorer trained on images leaves its networks in training mode
    fitted[key] = graph
    return graph


def _left_out(candidate: Candidate, size: tuple[int, int], why: str) -> Trial:
    return Trial(candidate.name, candidate.template, size, 0.0, 0.0, float("inf"), float("inf"), 0.0, False, why)


def choose_configuration(training: TrainingSet, config_file: str | Path | None = None,
                         overrides: list[str] | None = None, max_latency_ms: float | None = None,
                         defects: str | Path | None = None, seed: int = 0,
                         candidates: tuple[Candidate, ...] = CANDIDATES,
                         size_problem: SizeCheck | None = None) -> Choice:
    """Try every candidate on the training images and return the best, with the table of trials.

    ``size_problem`` (a board's input limits) says why an input size is out, or None.
    """
    started = time.perf_counter()
    overrides = overrides or []
    base = _candidate_params(candidates[0], config_file, overrides)
    aspect = training.aspect_ratio(base.roi, base.center_crop)
    with make_progress() as progress:
        task = progress.add_task("reading images for automatic configuration", total=None)
        frames = [frame[y:y + h, x:x + w] for _, frame in training.frames()
                  for x, y, w, h in [_region(frame, base)]]
        progress.update(task, completed=1, total=1)
    if len(frames) < 10:
        raise ValueError(f"{training.folder}: automatic configuration needs at least 10 normal images, "
                         f"found {len(frames)}; choose --template yourself")
    fit_idx, check_idx = split_holdout(len(frames), min(0.5, max(0.15, MAX_CHECK_IMAGES / len(frames))), seed)
    fit_idx = fit_idx[np.linspace(0, len(fit_idx) - 1, min(len(fit_idx), MAX_FIT_IMAGES)).round().astype(int)]
    check_idx = check_idx[:MAX_CHECK_IMAGES]
    if defects is not None:
        defect_set = TrainingSet.scan(defects)
        defect_frames = [frame[y:y + h, x:x + w] for _, frame in defect_set.frames()
                         for x, y, w, h in [_region(frame, base)]]
        source = str(defects)
    else:
        defect_frames, _ = synthetic_defect_set([frames[i] for i in check_idx], DEFECTS_PER_IMAGE, seed)
        source = "synthetic"
    trials = []
    latency = LatencyEstimate()
    fitted: dict[str, AnomalyGraph] = {}
    with make_progress() as progress:
        task = progress.add_task("trying candidates", total=len(candidates))
        for candidate in candidates:
            progress.update(task, description=f"trying candidate {candidate.name!r}")
            try:
                params = with_input_size(_candidate_params(candidate, config_file, overrides), aspect,
                                         size_problem)
                trial = _try(candidate, params, frames, fit_idx, check_idx, defect_frames, max_latency_ms,
                             size_problem, latency, fitted)
            except (ValueError, RuntimeError) as exc:  # e.g. --set keys another template does not have
                log.warning("candidate %s left out: %s", candidate.name, exc)
                trial = _left_out(candidate, (0, 0), str(exc).splitlines()[0])
            trials.append(trial)
            progress.advance(task)
        progress.update(task, description="trying candidates")
    best = best_trial(trials)
    if best is None:
        raise ValueError(f"no candidate meets the latency budget ({max_latency_ms} ms) and input limits:\n"
                         + Choice("", base, trials, source).table())
    chosen = next(c for c in candidates if c.name == best.candidate)
    params = _candidate_params(chosen, config_file, overrides)
    if params.input_size is None:  # the size it was tried at (within the board's limits)
        params = params.model_copy(update={"input_size": best.input_size})
    return Choice(chosen.template, params, trials, source, time.perf_counter() - started)


def fit_as_configured(training: TrainingSet, template: str | None = None, config_file: str | Path | None = None,
                      overrides: list[str] | None = None, defects: str | Path | None = None,
                      max_latency_ms: float | None = None, size_problem: SizeCheck | None = None,
                      candidates: tuple[Candidate, ...] = CANDIDATES,
                      announce: Callable[[Choice], None] | None = None) -> tuple[TrainedModel, Choice | None]:
    """What ``edge-anomaly fit`` does: the template named (argument or config file), else automatic
    configuration (``announce`` sees its choice before the full fit); then fitting and calibration.
    The search's table is kept in the model under ``info.autoconfig``."""
    choice = None
    if template in (None, "auto") and config_template(config_file) is None:
        choice = choose_configuration(training, config_file, overrides, max_latency_ms, defects,
                                      candidates=candidates, size_problem=size_problem)
        if announce is not None:
            announce(choice)
        template, params = choice.template, choice.params
    else:
        template, params = load_params(template, config_file, overrides)
    model = fit_model(training.folder, template, params, defects=defects, training=training)
    if choice is not None:
        model.info["autoconfig"] = choice.record()
    return model, choice


def _region(frame: np.ndarray, params: TemplateParams) -> tuple[int, int, int, int]:
    return crop_region(frame.shape[:2], params.roi, params.center_crop, "image")
