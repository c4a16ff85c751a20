"""Automatic configuration: synthetic defects are local and visible; the search picks what separates them."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # tries every candidate: not in -m "not slow"

pytest.importorskip("torch")

from edge_anomaly.autoconfig.search import Candidate, choose_configuration  # noqa: E402
from edge_anomaly.autoconfig.synthetic_defects import KINDS, add_defect  # noqa: E402
from edge_anomaly.data.training_set import TrainingSet  # noqa: E402
from runtime.image_io import list_images, read_image  # noqa: E402


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_defects_are_local_and_visible(boards, kind):
    image = read_image(list_images(boards / "train" / "good")[0])
    changed = np.abs(add_defect(image, kind, np.random.default_rng(3)).astype(int) - image).max(axis=2) > 12
    share = changed.mean()
    assert 0.0005 < share < 0.06, f"{kind}: {share:.4f} of the pixels changed"


def test_search_prefers_the_candidate_that_separates_defects_and_respects_the_budget(boards, capsys):
    training = TrainingSet.scan(boards)
    candidates = (
        # a scorer that sees only the coarsest stage cannot tell a small defect from normal; both at one input
        # size, so that neither costs more per image (a costlier one must win on AUROC: see the test below)
        Candidate("coarse", "patchcore", {"layers": ["stage6"], "coreset_ratio": 0.05}, 160 * 192),
        Candidate("fine", "patchcore", {"coreset_ratio": 0.05}, 160 * 192),
    )
    choice = choose_configuration(training, candidates=candidates)
    trials = {t.candidate: t for t in choice.trials}
    assert trials["fine"].synthetic_auroc > trials["coarse"].synthetic_auroc
    assert choice.template == "patchcore" and choice.params.layers == ["stage3", "stage5"]
    assert choice.record()["chosen"] == "fine" and "| fine |" in choice.table()
    with pytest.raises(ValueError, match="latency budget"):
        choose_configuration(training, max_latency_ms=0.001, candidates=candidates)


def test_a_boards_input_limits_shrink_the_candidates_size():
    from devices import load_profile
    from edge_anomaly.templates.patchcore import PatchCoreParams
    from edge_anomaly.training import with_input_size

    atom = load_profile("intel-atom-celeron").input.problem
    sized = with_input_size(PatchCoreParams(max_input_pixels=384 * 384), 1.25, atom)
    height, width = sized.input_size
    assert atom((height, width)) is None and max(height, width) <= 224 and height * width <= 50176
    assert with_input_size(PatchCoreParams(), 1.25, None).input_size == (224, 288)


def test_a_costlier_candidate_must_win_on_auroc_not_on_a_few_more_synthetic_catches():
    from edge_anomaly.autoconfig.search import Trial, best_trial

    def trial(name: str, auroc: float, recall: float, latency: float) -> Trial:
        return Trial(name, "patchcore", (256, 256), auroc, recall, latency, 1.0, True)

    default = trial("patchcore", 0.982, 0.50, 10.0)
    # bottle's case: 384 px at 2.5x the latency for AUROC 0.984 against 0.982 and a few more recalled
    assert best_trial([default, trial("patchcore 384", 0.984, 0.65, 25.0)]) is default
    assert best_trial([default, trial("top-3", 0.984, 0.65, 11.0)]).candidate == "top-3"  # as costly: recall counts
    assert best_trial([default, trial("patchcore 384", 0.990, 0.60, 25.0)]) is default
    weaker = trial("patchcore", 0.960, 0.50, 10.0)
    assert best_trial([weaker, trial("patchcore 384", 0.990, 0.60, 25.0)]).candidate == "patchcore 384"
