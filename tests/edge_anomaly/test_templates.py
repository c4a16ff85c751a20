"""Template maths against brute-force references: coreset, nearest neighbours, Mahalanobis."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_anomaly.templates import TEMPLATES, get_template  # noqa: E402
from edge_anomaly.templates.padim import PadimParams, PadimScorer  # noqa: E402
from edge_anomaly.templates.patchcore import PatchCoreParams, PatchCoreScorer  # noqa: E402
from edge_anomaly.templates.patchcore.coreset import greedy_coreset  # noqa: E402


def _coverage_radius(points: torch.Tensor, index: torch.Tensor) -> float:
    return float(torch.cdist(points, points[index]).min(dim=1).values.max())


def test_batched_coreset_covers_as_well_as_exact_greedy():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 40, generator=generator) * 4
    points = centres[torch.randint(30, (3000,), generator=generator)] + torch.randn(3000, 40, generator=generator)
    exact = greedy_coreset(points, 300, batch=1)
    batched = greedy_coreset(points, 300, batch=16)
    random = torch.randperm(3000, generator=generator)[:300]
    assert len(set(batched.tolist())) == 300
    assert _coverage_radius(points, batched) <= 1.05 * _coverage_radius(points, exact)
    assert _coverage_radius(points, batched) < 0.9 * _coverage_radius(points, random)
    with pytest.raises(ValueError):
        greedy_coreset(points, 0)


def _patchcore(bank_rows: int = 500, top_k: int = 1) -> PatchCoreScorer:
    params = PatchCoreParams(coreset_ratio=1.0, num_neighbors=4, top_k=top_k)
    scorer = PatchCoreScorer(params, [(8, 6, 6), (4, 3, 3)])
    generator = torch.Generator().manual_seed(1)
    scorer.fit(torch.rand(bank_rows // 36 + 1, 12, 6, 6, generator=generator))
    return scorer


def test_patchcore_nearest_matches_brute_force_for_any_chunk_size():
    scorer = _patchcore()
    patches = torch.rand(3, 36, 12, generator=torch.Generator().manual_seed(2))
    reference = torch.cdist(patches, scorer.memory_bank[None].expand(3, -1, -1))
    ref_dist, ref_index = reference.min(dim=2)
    for chunk in (1, 7, 100, 10_000):
        scorer.chunk_size = chunk
        assert torch.allclose(scorer.nearest_sq_dist(patches).sqrt(), ref_dist, atol=1e-4)
    assert torch.equal(scorer.nearest_entry(patches[:, 5]), ref_index[:, 5])


def test_patchcore_chunk_size_respects_the_element_budget():
    scorer = _patchcore()
    assert scorer.default_chunk_size(36 * 10) == 10  # 36 patches per image x 10 bank rows


@pytest.mark.parametrize("top_k", [1, 5])
def test_patchcore_image_score_is_reweighted_mean_of_top_k_patch_distances(top_k):
    scorer = _patchcore(top_k=top_k)
    features = [torch.rand(2, 8, 6, 6), torch.rand(2, 4, 3, 3)]
    patch_map, score = scorer(features)
    assert patch_map.shape == (2, 1, 6, 6)
    assert torch.all(scorer.bank_neighbors[:, 0] == torch.arange(len(scorer.memory_bank)))
    patches = scorer.embed(features).flatten(2).transpose(1, 2)
    for image in range(2):
        distances = torch.cdist(patches[image], scorer.memory_bank)  # [patches, bank]
        nearest = distances.min(dim=1)
        worst = int(nearest.values.argmax())
        neighbors = scorer.memory_bank[scorer.bank_neighbors[nearest.indices[worst]]]
        weight = 1 - torch.softmax(torch.linalg.norm(neighbors - patches[image, worst], dim=1), dim=0)[0]
        expected = weight * nearest.values.topk(top_k).values.mean()
        assert torch.allclose(patch_map[image].flatten(), nearest.values, atol=1e-4)
        assert torch.isclose(score[image], expected, atol=1e-4)


def test_padim_distance_matches_numpy_mahalanobis():
    params = PadimParams(n_features=5, layers=["stage3", "stage4"])
    scorer = PadimScorer(params, [(6, 4, 4), (4, 2, 2)])
    generator = torch.Generator().manual_seed(3)
    train = [torch.rand(40, 6, 4, 4, generator=generator), torch.rand(40, 4, 2, 2, generator=generator)]
    scorer.fit(scorer.embed(train))
    test = [torch.rand(1, 6, 4, 4, generator=generator), torch.rand(1, 4, 2, 2, generator=generator)]
    patch_map, score = scorer(test)

    emb_train = scorer.embed(train).double().numpy()
    emb_test = scorer.embed(test).double().numpy()
    y, x = 2, 1
    vectors = emb_train[:, :, y, x]
    covariance = np.cov(vectors, rowvar=False) + 0.01 * np.eye(5)
    diff = emb_test[0, :, y, x] - vectors.mean(axis=0)
    expected = np.sqrt(diff @ np.linalg.inv(covariance) @ diff)
    assert patch_map[0, 0, y, x].item() == pytest.approx(expected, rel=1e-3)
    assert score[0].item() == pytest.approx(patch_map.max().item())


def test_hyperparameters_are_validated_with_field_names():
    with pytest.raises(ValueError, match="input_size"):
        PatchCoreParams(input_size=(250, 256))
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCoreParams(coreset_ratio=0)
    with pytest.raises(ValueError, match="unknown_key"):
        PatchCoreParams(unknown_key=1)
    with pytest.raises(ValueError, match="padim, patchcore|patchcore, padim"):
        get_template("nope")


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_declares_the_contract(name):
    """What model.py, training, update and the exporters read from a template, declared by each one: its kind
    (one base class), its hyperparameters, a grid that the graph upsamples, its INT8 parts, its migrations and
    its package README pointing to its docs page. A new template passes this or says what it lacks."""
    from edge_anomaly.model import build_graph
    from edge_anomaly.templates import EmbeddingScorer, ImageTrainedScorer, TemplateParams
    from edge_anomaly.templates.base import Scorer
    from exporters.graph_parts import PARTS

    template = get_template(name)
    kinds = [kind for kind in (EmbeddingScorer, ImageTrainedScorer) if issubclass(template.scorer, kind)]
    assert len(kinds) == 1
    assert template.params is template.scorer.params_type and issubclass(template.params, TemplateParams)
    assert template.scorer.int8_parts and set(template.scorer.int8_parts) <= set(PARTS)
    assert not getattr(template.scorer, "__abstractmethods__", None)  # every hook the kind asks for is there
    params = template.params.model_validate(template.params.migrate(
        {"threshold_quantile": 0.99, "input_size": [64, 96], "heatmap_sigma": 1.0}))
    graph = build_graph(name, params)
    assert isinstance(graph.scorer, Scorer) and len(graph.scorer.grid) == 2
    assert graph.rows_map.shape == (64, graph.scorer.grid[0]) and graph.cols_map.shape == (graph.scorer.grid[1], 96)
    package = Path(sys.modules[template.scorer.__module__].__file__).parent
    assert package.name == name and f"docs/templates/{name}.md" in (package / "README.md").read_text()


def test_config_file_and_overrides(tmp_path):
    from edge_anomaly.config import load_params

    config = tmp_path / "c.yaml"
    config.write_text("template: padim\nn_features: 32\n")
    name, params = load_params(None, config, ["input_size=[128, 160]"])
    assert name == "padim" and params.n_features == 32 and params.input_size == (128, 160)
    with pytest.raises(ValueError, match="coreset_ratio.*got 2"):
        load_params("patchcore", overrides=["coreset_ratio=2"])
    with pytest.raises(ValueError, match="conflicts"):
        load_params("patchcore", config)
    with pytest.raises(ValueError, match="key=value"):
        load_params("patchcore", overrides=["coreset_ratio"])


@pytest.mark.parametrize(("sigma", "grid", "size"), [(0.0, (6, 6), (64, 96)), (4.0, (6, 6), (64, 96)),
                                                     (4.0, (28, 36), (224, 288)), (4.0, (36, 28), (288, 224))])
def test_heatmap_operator_equals_upsampling_then_separable_gaussian(sigma, grid, size):
    """The graph's two small matrices give what bilinear upsampling then a reflected-border blur gives,
    for square and non-square grids and input sizes (the input follows the images' aspect ratio)."""
    from edge_anomaly.graph import AnomalyGraph, gaussian_kernel_1d

    scorer = PatchCoreScorer(PatchCoreParams(), [(8, *grid)])
    graph = AnomalyGraph(torch.nn.Identity(), scorer, size, sigma)
    patch_map = torch.rand(2, 1, *grid, generator=torch.Generator().manual_seed(4))
    expected = torch.nn.functional.interpolate(patch_map, size=size, mode="bilinear", align_corners=False)
    if sigma:
        kernel = gaussian_kernel_1d(sigma)
        radius = kernel.numel() // 2
        expected = torch.nn.functional.conv2d(
            torch.nn.functional.pad(expected, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        expected = torch.nn.functional.conv2d(
            torch.nn.functional.pad(expected, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    heatmap = graph.heatmap(patch_map)
    assert heatmap.shape == (2, *size)
    assert torch.allclose(heatmap, expected[:, 0], atol=1e-5)
