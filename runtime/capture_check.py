"""Does a source deliver the capture the model was made for? Said once per source, with the fix.

A model learns one camera's images: stills or video, its codec, its resolution, its noise. A
model fitted on PNG stills and run on a compressed video stream flags good frames it has never
seen the like of, and nothing else would tell the user why everything is red. The model
records what it was trained on (:class:`runtime.manifest.CaptureSection`, in ``model.json`` and
the bundle's manifest); :class:`CaptureCheck` compares each source's first frames with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from runtime.manifest import STILLS, CaptureSection
from runtime.scoring import Scoring

log = logging.getLogger(__name__)

FRAMES_COMPARED = 5  # a source's first frames whose median capture statistics are compared
SCALE_TOLERANCE = 1.25  # frames this much larger or smaller (linear) than the training frames are named


@dataclass
class _SourceSeen:
    video: bool
    frame_hw: tuple[int, int]
    capture: list[np.ndarray] = field(default_factory=list)
    compared: bool = False


class CaptureCheck:
    """Compares each source's first frames with what a model's training frames were; one warning per source.

    The warning names what differs (stills against video, compression, noise, scale) and the
    fix. Without a profile (models made before it) nothing is checked.
    """

    def __init__(self, profile: CaptureSection | None, scoring: Scoring) -> None:
        self.profile = profile
        self.scoring = scoring
        self.sources: dict[str, _SourceSeen] = {}
        self.warnings: dict[str, str] = {}  # source -> the warning given

    def observe(self, source: str, video: bool, frame_hw: tuple[int, int],
                capture: np.ndarray | None) -> str | None:
        """Take one frame of ``source`` (``video``: from a video file or a live stream); the warning when this
        frame completes the comparison and something differs, else None. Logged too."""
        if self.profile is None:
            return None
        seen = self.sources.setdefault(source, _SourceSeen(video, tuple(frame_hw)))
        if seen.compared:
            return None
        if capture is not None:
            seen.capture.append(np.asarray(capture, dtype=np.float64))
            if len(seen.capture) < FRAMES_COMPARED:
                return None
        seen.compared = True
        problems = self._differences(seen)
        if not problems:
            return None
        warning = f"{source}: " + "; ".join(problems) + " " + self._fix()
        self.warnings[source] = warning
        log.warning("%s", warning)
        return warning

    def _differences(self, seen: _SourceSeen) -> list[str]:
        profile = self.profile
        problems = []
        if seen.video and profile.source == STILLS:
            problems.append(f"the model was fitted on still images ({', '.join(profile.suffixes)}) and this source "
                            "is video, whose codec it has only learned as far as its capture_tolerance goes")
        if seen.capture and self.scoring.checks_capture:
            median = np.median(np.stack(seen.capture), axis=0)
            excess = self.scoring.capture_excess(median)
            if excess["compression"] >= 0.0:
                problems.append(f"its frames are more compressed than the training frames (JPEG blockiness "
                                f"{median[1]:.2f} against {profile.blockiness:.2f})")
            if excess["noise"] >= 0.0:
                problems.append(f"its frames are noisier than the training frames (noise {median[0]:.1f} against "
                                f"{profile.noise:.1f} grey levels)")
        scale = np.sqrt(np.prod(seen.frame_hw) / max(np.prod(profile.frame_hw), 1))
        if not 1 / SCALE_TOLERANCE <= scale <= SCALE_TOLERANCE:
            problems.append(f"its frames are {seen.frame_hw[1]}x{seen.frame_hw[0]} and the training frames "
                            f"{profile.frame_hw[1]}x{profile.frame_hw[0]}, so the part appears at another scale")
        return problems

    def _fix(self) -> str:
        return ("If good parts are flagged, fit on this camera's own frames (edge-anomaly fit --data line.mp4 for a "
                "video), add its codec to training (--set augment=[jpeg,video]), or widen what training tolerates "
                "(e.g. --set capture_tolerance={noise_sigma: 6, jpeg_quality: 50}).")
