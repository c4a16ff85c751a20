"""Greedy k-center coreset selection, fast enough to run at 10% on a 2-core box.

Exact greedy selection (PatchCore, Roth et al. 2022) updates every point's distance after
each pick: one memory-bound matrix-vector product per selected patch, which is why it takes
tens of minutes elsewhere. Here the features are first reduced by a random projection
(Johnson-Lindenstrauss, as in the paper), and centres are picked in batches: each round
takes the points farthest from the current coreset as candidates, runs exact greedy among
them alone, then updates all distances with one matrix product for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def project(features: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Random Gaussian projection to ``dim`` dimensions (identity when already that small)."""
    if features.shape[1] <= dim:
        return features
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(features.shape[1], dim, generator=generator) / dim**0.5
    return features @ matrix


def greedy_coreset(features: torch.Tensor, size: int, *, projection_dim: int = 128, batch: int = 16,
                   candidates_per_pick: int = 4, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Indices of ``size`` rows of ``features`` chosen to cover the rest (k-center greedy).

    ``batch`` centres are committed per round; ``candidates_per_pick * batch`` of the farthest
    points compete for them. ``batch=1`` is the exact greedy algorithm.
    """
    count = features.shape[0]
    if not 0 < size <= count:
        raise ValueError(f"coreset size {size} must be in 1..{count}")
    points = project(features.float(), projection_dim, seed)
    squared_norms = (points * points).sum(dim=1)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(count, (1,), generator=generator))
    min_dist = (squared_norms - 2 * points @ points[first] + squared_norms[first]).clamp_min_(0)
    selected = [first]
    min_dist[first] = -1.0  # never pick a point twice
    while len(selected) < size:
        picks = min(batch, size - len(selected))
        pool = torch.topk(min_dist, min(count, picks * candidates_per_pick)).indices
        pool_points = points[pool]
        pool_sq = squared_norms[pool]
        pool_pairwise = (pool_sq[:, None] - 2 * pool_points @ pool_points.T + pool_sq[None, :]).clamp_min_(0)
        pool_dist = min_dist[pool].clone()
        chosen = []
        for _ in range(picks):
            best = int(torch.argmax(pool_dist))
            if pool_dist[best] < 0:
                break
            chosen.append(best)
            pool_dist = torch.minimum(pool_dist, pool_pairwise[best])
            pool_dist[best] = -1.0
        new = pool[torch.tensor(chosen)]
        # |x - c|^2 = |x|^2 + min_c(|c|^2 - 2 x.c): one fused matrix product per round
        partial = torch.addmm(squared_norms[new], points, points[new].T, alpha=-2).min(dim=1).values
        torch.minimum(min_dist, (partial + squared_norms).clamp_min_(0), out=min_dist)
        min_dist[new] = -1.0
        selected.extend(new.tolist())
        if progress is not None:
            progress(len(selected), size)
    return torch.tensor(selected[:size])
