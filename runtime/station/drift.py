"""Drift: a rolling picture of what a camera sees, against what its bundle was trained on.

A lamp that ages, a camera nudged out of focus or a supplier's new component colour change the
frames slowly; each frame still passes or fails on its own, until the false alarms pile up.
The monitor keeps the last ``window`` frames of one camera and, every ``every`` frames,
compares them with the bundle's training reference (``manifest.drift_reference``):

- ``score``: the population-stability index of the local normalised scores over the
  reference's deciles (10 bins, 10 % each expected), counted only when the window's median
  lies above the reference's: the reference is the k-fold held-out scores, a conservative
  (higher) picture of normal, since masking a fold's coreset entries leaves gaps a full bank
  does not have; a line scoring lower than them is not drifting towards false alarms;
- ``near_threshold``: the share of frames scoring between NEAR_LOW and the threshold, above
  the reference's share;
- each whole-image statistic of the lighting and blur checks (``runtime.global_stats``): the
  window mean's distance from the training mean, in training spreads (z).

A statistic past its onset level at ``persist`` evaluations in a row is a drift; the drift
clears when every statistic is back under its (lower) clear level for ``persist`` evaluations,
so a line hovering at a level does not flap. A bundle without a reference (older exports)
gets one learnt from the first full window after the start, and the state says so
("learning", then reference "learned"). One call per frame costs a few appends; the
comparison runs on a 120-frame window every 10 frames.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from runtime.global_stats import STAT_NAMES, GlobalStats
from runtime.manifest import DriftReference
from runtime.station.messages import iso_time

log = logging.getLogger(__name__)

OK, DRIFT, LEARNING = "ok", "drift", "learning"
WINDOW = 120  # frames compared (one minute at 2 fps)
EVERY = 10  # frames between comparisons
PERSIST = 3  # comparisons in a row that start or clear a drift
DECILES = np.linspace(0.1, 0.9, 9)
NEAR_LOW = 0.3  # normalised score from which a frame is near the threshold (0.5)
# (onset, clear) levels of each kind of statistic
PSI_LEVELS = (0.25, 0.1)  # the usual reading of a PSI: < 0.1 stable, > 0.25 a major shift
NEAR_LEVELS = (0.15, 0.075)  # share of the window near the threshold beyond the reference's
# window mean's distance from the training mean, in training spreads: bottle's test/good sits 0.7
# spreads sharper than its train/good, so a 120-frame window of a few dozen parts reaches ~1.0
Z_LEVELS = (1.5, 0.75)


@dataclass(frozen=True)
class Reference:
    """Decile edges of normal normalised scores, their share near the threshold, and global statistics."""

    edges: np.ndarray
    near_share: float
    stats: GlobalStats | None
    source: str  # "bundle" or "learned"

    @classmethod
    def from_manifest(cls, section: DriftReference) -> Reference:
        levels, quantiles = np.asarray(section.levels), np.asarray(section.score_quantiles)
        cdf = np.interp([NEAR_LOW, 0.5], quantiles, levels)
        stats = None
        if section.global_stats is not None:
            recorded = section.global_stats
            if list(recorded.names) == list(STAT_NAMES):
                stats = recorded
            else:
                log.warning("drift reference: global statistics of another edge-anomaly version are not compared")
        return cls(np.interp(DECILES, levels, quantiles), float(cdf[1] - cdf[0]), stats, "bundle")

    @classmethod
    def learned(cls, scores: np.ndarray, stats: list[np.ndarray]) -> Reference:
        """From the first window the station saw: what the line looks like now stands for normal."""
        near = near_threshold_share(scores)
        reference = GlobalStats.fit(np.stack(stats)) if len(stats) >= len(scores) // 2 else None
        return cls(np.quantile(scores, DECILES), near, reference, "learned")


@dataclass(frozen=True)
class DriftState:
    """What the station reports per camera: ``state`` and, in a drift, which statistic moved, how far, since when."""

    state: str
    reference: str | None = None  # "bundle", "learned", or None while learning
    statistic: str | None = None
    value: float | None = None  # PSI (score), share (near_threshold) or z (a global statistic)
    since: float | None = None  # epoch seconds of the onset (drift) or of the last clear (ok)
    moved: tuple[tuple[str, float], ...] = ()  # every statistic past its onset level, furthest first

    def to_dict(self) -> dict:
        return {"state": self.state, "reference": self.reference, "statistic": self.statistic,
                "value": None if self.value is None else round(self.value, 4),
                "since": None if self.since is None else iso_time(self.since),
                "moved": {name: round(value, 4) for name, value in self.moved}}


def near_threshold_share(scores: np.ndarray) -> float:
    """Share of normalised scores from NEAR_LOW up to the threshold (0.5): frames close to an alarm."""
    return float(np.mean((scores >= NEAR_LOW) & (scores < 0.5)))


def population_stability(scores: np.ndarray, edges: np.ndarray) -> float:
    """PSI of ``scores`` over the bins between ``edges``, each expected to hold an equal share.

    Counts are smoothed by half a frame per bin so an empty bin does not make it infinite.
    """
    bins = len(edges) + 1
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=bins)
    actual = (counts + 0.5) / (len(scores) + 0.5 * bins)
    expected = 1.0 / bins
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftMonitor:
    """One camera's drift state from its stream of (local normalised score, global statistics)."""

    def __init__(self, reference: Reference | None, window: int = WINDOW, every: int = EVERY,
                 persist: int = PERSIST) -> None:
        self.reference = reference
        self.every = every
        self.persist = persist
        self._scores: deque[float] = deque(maxlen=window)
        self._stats: deque[np.ndarray] = deque(maxlen=window)
        self._frames = 0
        self._streak = 0
        self.state = DriftState(LEARNING) if reference is None else DriftState(OK, reference.source)

    @classmethod
    def for_manifest(cls, section: DriftReference | None, **kwargs) -> DriftMonitor:
        return cls(None if section is None else Reference.from_manifest(section), **kwargs)

    def observe(self, score: float, stats: np.ndarray | None, now: float) -> DriftState | None:
        """Add one frame seen at ``now`` (epoch seconds); the new state when a drift starts or clears."""
        self._scores.append(score)
        if stats is not None:
            self._stats.append(stats)
        self._frames += 1
        if len(self._scores) < self._scores.maxlen:
            return None
        if self.reference is None:
            self.reference = Reference.learned(np.fromiter(self._scores, float), list(self._stats))
            log.info("drift: no reference in the bundle; learnt one from the first %d frames", len(self._scores))
            self.state = DriftState(OK, self.reference.source, since=now)
            return None
        if self._frames % self.every:
            return None
        return self._compare(now)

    def measures(self) -> dict[str, tuple[float, float]]:
        """Every statistic's (value, value / its onset level) over the current window."""
        scores = np.fromiter(self._scores, float)
        psi = population_stability(scores, self.reference.edges)
        upward = float(np.median(scores)) > float(self.reference.edges[len(self.reference.edges) // 2])
        near = near_threshold_share(scores)
        out = {"score": (psi, psi / PSI_LEVELS[0] if upward else 0.0),
               "near_threshold": (near, (near - self.reference.near_share) / NEAR_LEVELS[0])}
        stats = self.reference.stats
        if stats is not None and len(self._stats) >= len(self._scores) // 2:
            z = (np.nanmean(np.stack(self._stats), axis=0) - stats.mean) / stats.std
            out.update({name: (float(value), abs(float(value)) / Z_LEVELS[0])
                        for name, value in zip(STAT_NAMES, z, strict=True)})
        return out

    def _compare(self, now: float) -> DriftState | None:
        measures = self.measures()
        ranked = sorted(measures, key=lambda name: measures[name][1], reverse=True)
        worst = ranked[0]
        value, ratio = measures[worst]
        moved = tuple((name, measures[name][0]) for name in ranked if measures[name][1] >= 1.0)
        if self.state.state == OK:
            self._streak = self._streak + 1 if ratio >= 1.0 else 0
            if self._streak >= self.persist:
                self._streak = 0
                self.state = DriftState(DRIFT, self.reference.source, worst, value, now, moved)
                return self.state
            return None
        settled = all(r < clear_ratio(name) for name, (_, r) in measures.items())
        self._streak = self._streak + 1 if settled else 0
        if self._streak >= self.persist:
            self._streak = 0
            self.state = DriftState(OK, self.reference.source, since=now)
            return self.state
        self.state = replace(self.state, statistic=worst, value=value, moved=moved)
        return None


def clear_ratio(statistic: str) -> float:
    """A statistic's clear level as a share of its onset level."""
    levels = {"score": PSI_LEVELS, "near_threshold": NEAR_LEVELS}.get(statistic, Z_LEVELS)
    return levels[1] / levels[0]
