"""Report on a handful of synthetic records: metric values, JSON nulls, ROC image, worst cases."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_anomaly.evaluation.report import EvalRecord, compute_metrics, metrics_table, write_report

SIZE = 32


def _record(path: str, defect: str, score: float, with_mask: bool = True) -> EvalRecord:
    heatmap = np.full((SIZE, SIZE), 0.05, dtype=np.float32)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    if defect == "good":
        heatmap[4:10, 4:10] = min(score, 0.6)  # normal pixels never beat a defect pixel
    elif with_mask:
        mask[8:20, 10:14] = True
        heatmap[mask] = 0.9
    else:
        heatmap[:] = score  # a global defect lights up the whole map
    return EvalRecord(
        path=path,
        defect=defect,
        label=int(defect != "good"),
        score=score,
        heatmap=heatmap,
        mask=mask if (defect == "good" or with_mask) else None,
        kind=None if defect == "good" else ("local" if with_mask else "lighting"),
    )


def _records() -> list[EvalRecord]:
    good = [_record(f"good/{i:03d}.png", "good", s) for i, s in enumerate([0.1, 0.2, 0.3, 0.6])]
    scratch = [_record(f"scratch/{i:03d}.png", "scratch", s) for i, s in enumerate([0.7, 0.8, 0.4])]
    lighting = [_record(f"lighting/{i:03d}.png", "lighting", s, False) for i, s in enumerate([0.9, 0.55])]
    return good + scratch + lighting


def _loader(path: str) -> np.ndarray:
    return np.full((2 * SIZE, 2 * SIZE, 3), 128, dtype=np.uint8)


def test_compute_metrics_values():
    m = compute_metrics(_records())
    # 18 of 20 (anomalous, good) pairs ordered correctly; scratch 11 of 12, lighting 7 of 8.
    assert m["image_auroc"] == pytest.approx(0.9)
    # At the calibrated 0.5: good 0.6 is a false alarm (1 of 4), scratch 0.4 a miss (1 of 5).
    assert (m["false_alarm_rate"], m["false_alarm_count"], m["n_good"]) == (0.25, 1, 4)
    assert (m["miss_rate"], m["miss_count"], m["n_anomalous"]) == (0.2, 1, 5)
    assert m["per_defect"]["scratch"] == {
        "image_auroc": pytest.approx(11 / 12),
        "n": 3,
        "miss_rate": pytest.approx(1 / 3),
        "miss_count": 1,
        "recall_calibrated": pytest.approx(2 / 3),
        "kinds": {"local": 2},
    }
    assert m["per_defect"]["lighting"] == {
        "image_auroc": pytest.approx(7 / 8),
        "n": 2,
        "miss_rate": 0.0,
        "miss_count": 0,
        "recall_calibrated": 1.0,
        "kinds": {"lighting": 2},
    }
    # Best at 0.4: TP 5, FP 1 -> 10/11. At 0.5: TP 4, FP 1, FN 1 -> 0.8.
    assert m["image_f1"] == pytest.approx(10 / 11)
    assert m["best_threshold"] == pytest.approx(0.4)
    assert m["image_f1_calibrated"] == pytest.approx(0.8)
    # Lighting images have no mask: pixel metrics over 4 good + 3 scratch, all perfect.
    assert m["pixel_auroc"] == pytest.approx(1.0)
    assert m["pixel_aupro"] == pytest.approx(1.0)
    assert (m["n_images"], m["n_anomalous"], m["n_pixel_images"]) == (9, 5, 7)
    json.dumps(m)


MODEL = {"template": "patchcore", "input_size": [256, 320], "training_images": 80, "raw_threshold": 1.2345,
         "created": "2026-12-01T23:00:00Z", "folder": "models/boards", "hash": "ab" * 32}


def test_write_report(tmp_path):
    records = _records()
    metrics = {**compute_metrics(records), "model": MODEL}
    out = write_report(tmp_path / "report", records, metrics, title="bottle", image_loader=_loader, worst=2)
    assert out == tmp_path / "report"
    document = json.loads((out / "metrics.json").read_text())
    assert document["image_auroc"] == pytest.approx(0.9)
    assert document["per_defect"]["scratch"]["n"] == 3
    assert len(document["images"]) == 9
    assert document["images"][4] == {
        "path": "scratch/000.png",
        "defect": "scratch",
        "label": 1,
        "score": 0.7,
        "kind": "local",
    }

    markdown = (out / "metrics.md").read_text()
    assert markdown.startswith("# bottle\n")
    table = markdown.splitlines()[4:7]  # the line's figures first, then AUROC
    assert table == ["| false-alarm rate (good flagged) | 25.0 % (1 of 4) |",
                     "| miss rate (defects not flagged) | 20.0 % (1 of 5) |", "| image AUROC | 0.900 |"]
    assert "| scratch | 3 | 33.3 % (1 of 3) | 0.917 | local 2 |" in markdown

    roc = cv2.imread(str(out / "roc.png"))
    assert roc is not None and roc.shape[0] > 100 and roc.shape[1] > 100

    # Every false alarm and miss, then the `worst` closest of each; named by verdict.
    worst = sorted(p.name for p in (out / "worst").iterdir())
    assert worst == ["defect_01_missed_scratch_002.png", "defect_02_caught_lighting_001.png",
                     "defect_03_caught_scratch_000.png",
                     "good_01_false_alarm_003.png", "good_02_passed_002.png", "good_03_passed_001.png"]
    overlay = cv2.imread(str(out / "worst" / "good_01_false_alarm_003.png"))
    # Image and overlay side by side, enlarged to a legible width, under a caption banner.
    assert overlay.shape[1] == 2 * 320 and overlay.shape[0] > 320
    assert (overlay[:5] == overlay[0, 0]).all()  # the banner's top rows are plain, the text below them
    assert (overlay[-320:, :320] == 128).all()  # a good image: no outline, and the grey part left as it was
    missed = cv2.imread(str(out / "worst" / "defect_01_missed_scratch_002.png"))[-320:]
    cyan = np.all(missed == (255, 255, 0), axis=2)  # BGR: the ground-truth outline, mask rows 8-20 of 32
    assert cyan[:, :320].any() and cyan[:, 320:].any()  # on the image and on the heatmap overlay
    rows = np.nonzero(cyan[:, :320].any(axis=1))[0]
    assert rows.min() >= 78 and rows.max() <= 202

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1  # the ROC
    assert page.count('<a href="worst/') == page.count("data:image/jpeg;base64,") == 6  # linked thumbnails
    assert "False alarms (1)" in page and "Misses (1)" in page
    assert page.index("False alarms (1)") < page.index("good_01_false_alarm_003.png") < page.index("Misses (1)")
    for fact in ("patchcore", "320x256", "80", "1.234", "ab" * 32, "2026-12-01T23:00:00Z"):
        assert f"<td>{fact}</td>" in page, fact
    assert "| input size | 320x256 |" in markdown
    assert "<script" not in page and "http" not in page and "<link" not in page
    assert "25.0 % (1 of 4)" in page

    # A rerun with fewer worst cases leaves no stale overlays behind.
    write_report(out, records, compute_metrics(records), title="bottle", image_loader=_loader, worst=1)
    assert len(list((out / "worst").iterdir())) == 4  # the false alarm and the miss, and one closest of each


def test_undefined_metrics_become_null(tmp_path):
    # Only good images and a maskless global defect: no defect pixels, pixel metrics undefined.
    records = [_record("good/a.png", "good", 0.2), _record("lighting/b.png", "lighting", 0.8, False)]
    metrics = compute_metrics(records)
    assert np.isnan(metrics["pixel_aupro"]) and np.isnan(metrics["pixel_auroc"])
    out = write_report(tmp_path, records, metrics, title="t", image_loader=_loader)
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text
    document = json.loads(text)
    assert document["pixel_aupro"] is None and document["pixel_auroc"] is None
    assert document["image_auroc"] == 1.0
    assert "| pixel AUPRO (FPR <= 0.3) | n/a |" in metrics_table(metrics)
    assert len(list((out / "worst").iterdir())) == 2  # one good, one anomalous, worst=6
