"""PatchCore (Roth et al., CVPR 2022): a coreset of normal patch features and nearest neighbours.

Each position's feature is averaged over its neighbourhood (locally aware patch features),
layers are aligned on the finest grid, and a greedy coreset keeps a fraction of all training
patches. A patch's anomaly score is the distance to its nearest memory-bank entry; the image
score is the mean of the ``top_k`` largest patch scores (PatchCore: the largest alone),
reweighted by how isolated the worst patch's neighbour is in the bank. The nearest-neighbour
search is written as chunked matrix products so that an exported graph never materialises a
tensor larger than a fixed budget, whatever the bank size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edge_anomaly.templates.base import MemoryBankScorer, aligned_concat, batched_image_scores
from edge_anomaly.templates.patchcore.coreset import greedy_coreset
from edge_anomaly.templates.patchcore.params import PatchCoreParams

# Largest distance block (elements per image) materialised at once during the search: small
# enough to stay in cache-friendly pieces on a CPU, far below TensorRT's 2^31 limit.
DEFAULT_CHUNK_BUDGET = 2**21


class PatchCoreScorer(MemoryBankScorer):
    params_type = PatchCoreParams
    scoring_params = ("top_k",)  # the image score from the patch scores: the bank does not depend on it

    def __init__(self, params: PatchCoreParams, feature_shapes: list[tuple[int, int, int]]) -> None:
        if params.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd, got {params.patch_size}")
        super().__init__(params, feature_shapes)
        self.bank_source = np.zeros(0, np.int64)  # training image of each bank entry (fit only, not saved)
        self.pool = nn.AvgPool2d(params.patch_size, stride=1, padding=params.patch_size // 2,
                                 count_include_pad=False)
        self.register_buffer("memory_bank", torch.zeros(0, self.channels))
        self.register_buffer("bank_sq_norms", torch.zeros(0))
        self.register_buffer("bank_neighbors", torch.zeros(0, params.num_neighbors, dtype=torch.int64))
        self.chunk_size = self.default_chunk_size(DEFAULT_CHUNK_BUDGET)

    def default_chunk_size(self, budget_elements: int) -> int:
        """Bank entries compared per step so one image's distance block stays within budget."""
        patches = self.grid[0] * self.grid[1]
        return max(1, budget_elements // patches)

    def limit_tensor_elements(self, max_batch: int, limit: int) -> None:
        """Shrink the bank chunks so no distance block passes ``limit`` elements at ``max_batch`` images."""
        patches = self.grid[0] * self.grid[1]
        if max_batch * patches * self.chunk_size > limit:
            self.chunk_size = max(1, limit // (max_batch * patches))

    @property
    def bank_entries(self) -> int:
        return self.memory_bank.shape[0]

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        return aligned_concat([self.pool(f) for f in features], self.grid)

    def fit(self, embeddings: torch.Tensor) -> None:
        bank, self.bank_source = self.coreset(embeddings, self.params.num_neighbors + 1, self.progress)
        if self.progress is not None:
            self.progress(len(bank), len(bank))
        self.set_bank(bank)

    def coreset(self, embeddings: torch.Tensor, min_size: int,
                progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """(the greedy coreset of the embeddings' patches at ``coreset_ratio``, at least ``min_size`` entries;
        the image each entry came from). Fit builds the bank with it, an update the entries it appends.

        The ratio is of the training images' patches, not their copies' (``copies_per_image``): the copies
        teach the bank what a camera varies, and a bank twice as large would make every frame twice as slow
        to search (bottle: the same 0/20 good bottles flagged under noise, JPEG and exposure either way)."""
        patches = embeddings.permute(0, 2, 3, 1).reshape(-1, embeddings.shape[1])
        wanted = round(patches.shape[0] * self.params.coreset_ratio / self.copies_per_image)
        size = min(patches.shape[0], max(min_size, wanted))
        if size < patches.shape[0]:
            index = greedy_coreset(patches, size, projection_dim=self.params.projection_dim,
                                   seed=self.params.seed, progress=progress)
        else:
            index = torch.arange(patches.shape[0])
        return patches[index].contiguous(), (index // (embeddings.shape[2] * embeddings.shape[3])).numpy()

    def set_bank(self, bank: torch.Tensor) -> None:
        """Search ``bank``: its squared norms and each entry's neighbour table follow it."""
        self.memory_bank = bank.contiguous()
        self.bank_sq_norms = (self.memory_bank * self.memory_bank).sum(dim=1)
        self.bank_neighbors = self._bank_self_neighbors(self.memory_bank,
                                                        min(self.params.num_neighbors, len(self.memory_bank)))

    @torch.no_grad()
    def fold_scores(self, embeddings: torch.Tensor, folds: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """k-fold scores from the fitted bank with the fold's own entries masked out, corrected by one real refit.

        Masking costs one search instead of one coreset per fold, but a masked bank is not a bank
        that never saw the fold: the coreset spent entries on the fold's images, and masking them
        leaves holes that a coreset of the other folds would have filled, so masked scores sit
        above those of unseen good images (bottle: median 20.7 against 19.2), which raised the
        threshold and let defects through. One fold is therefore refitted for real, and every
        masked score is scaled by the median ratio of that fold's real to masked scores; the
        refitted fold keeps its real scores. The ratio is kept in ``training_info``.
        """
        if len(self.bank_source) != self.memory_bank.shape[0]:
            return super().fold_scores(embeddings, folds, batch_size)
        masked = self.masked_fold_scores(embeddings, folds, folds[self.bank_source], batch_size)
        probe = folds == np.unique(folds)[len(np.unique(folds)) // 2]
        if probe.all():
            return masked
        refit = PatchCoreScorer(self.params, self.feature_shapes)
        refit.copies_per_image = self.copies_per_image
        bank, _ = refit.coreset(embeddings[torch.from_numpy(~probe)], self.params.num_neighbors + 1)
        refit.set_bank(bank)
        unseen = batched_image_scores(refit, embeddings[torch.from_numpy(probe)], batch_size)
        ratio = float(np.median(unseen / np.maximum(masked[probe], 1e-12)))
        self.training_info = {**(self.training_info or {}), "fold_score_correction": round(ratio, 4)}
        corrected = masked * ratio
        corrected[probe] = unseen
        return corrected

    def add_normals(self, embeddings: torch.Tensor, folds: np.ndarray, batch_size: int) -> np.ndarray:
        """Append a coreset of the new images' patches at the same ratio, so the update costs one coreset of
        the new images alone; each new image is scored without its own fold's new entries (the old entries
        are never masked)."""
        added, source = self.coreset(embeddings, min_size=1)
        old_size = self.bank_entries
        self.set_bank(torch.cat([self.memory_bank, added]))
        entry_fold = np.concatenate([np.full(old_size, -1), folds[source]])
        return self.masked_fold_scores(embeddings, folds, entry_fold, batch_size)

    @torch.no_grad()
    def masked_fold_scores(self, embeddings: torch.Tensor, folds: np.ndarray, entry_fold: np.ndarray,
                           batch_size: int = 8) -> np.ndarray:
        """Each image's score against the bank without the entries of its own fold (``entry_fold``: each bank
        entry's fold; an entry whose fold no image has, such as -1, is never masked)."""
        scores = np.empty(len(embeddings), np.float64)
        for fold in np.unique(folds):
            held = np.flatnonzero(folds == fold)
            masked = PatchCoreScorer(self.params, self.feature_shapes)
            masked.set_bank(self.memory_bank[torch.from_numpy(entry_fold != fold)])
            scores[held] = batched_image_scores(masked, embeddings[held], batch_size)
        return scores

    @staticmethod
    def _bank_self_neighbors(bank: torch.Tensor, k: int, rows_per_step: int = 2048) -> torch.Tensor:
        """Each bank entry's k nearest bank entries (itself first), for the reweighting."""
        sq = (bank * bank).sum(dim=1)
        out = []
        for start in range(0, bank.shape[0], rows_per_step):
            rows = bank[start:start + rows_per_step]
            dist = sq[start:start + rows_per_step, None] - 2 * rows @ bank.T + sq[None, :]
            out.append(torch.topk(dist, k, dim=1, largest=False).indices)
        return torch.cat(out)

    def nearest_sq_dist(self, patches: torch.Tensor) -> torch.Tensor:
        """Squared distance to the nearest bank entry for [N, P, C] patches, [N, P].

        The bank is walked in chunks; each step materialises at most N x P x chunk_size.
        |x - m|^2 = |x|^2 + (|m|^2 - 2 x.m): the bracket is one fused matrix product over the
        precomputed bank norms, and |x|^2 is added after the minimum since it does not change
        which entry is nearest. Only the minimum is kept: which entry it was matters for the
        worst patch alone (:meth:`nearest_entry`), and an arg-min over every patch and bank
        entry cost a tenth of the whole graph in ONNX Runtime.
        """
        rows = patches.reshape(-1, patches.shape[2])
        scaled = rows * -2.0  # a plain MatMul then Add, which ONNX Runtime runs as an INT8 product when quantised
        best = None
        for start in range(0, self.memory_bank.shape[0], self.chunk_size):
            stop = start + self.chunk_size
            dist = scaled @ self.memory_bank[start:stop].T + self.bank_sq_norms[start:stop]
            chunk_best = dist.amin(dim=1)
            best = chunk_best if best is None else torch.minimum(best, chunk_best)
        best = best + (rows * rows).sum(dim=1)
        return best.clamp_min(0.0).reshape(patches.shape[:2])

    def nearest_entry(self, rows: torch.Tensor) -> torch.Tensor:
        """Index of the nearest bank entry for a few [N, C] rows (one per image): one small product.

        The bank is the left operand, so this product never shares the transposed bank that an
        INT8 export quantises for the search: the neighbour is picked in float.
        """
        dist = self.bank_sq_norms[:, None] - 2.0 * (self.memory_bank @ rows.T)  # [bank, N]
        return dist.argmin(dim=0)

    def score(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = embeddings.flatten(2).transpose(1, 2)  # [N, P, C]
        dist = self.nearest_sq_dist(patches).sqrt()
        patch_map = dist.reshape(-1, 1, *self.grid)
        top_dist, top_pos = dist.topk(min(self.params.top_k, dist.shape[1]), dim=1)
        max_pos = top_pos[:, 0]
        # Reweighting (PatchCore eq. 7): a test patch whose nearest bank entry sits in a dense
        # region of the bank is more surely anomalous than one near a sparse, rare entry.
        channels = patches.shape[2]
        worst_patch = torch.gather(patches, 1, max_pos[:, None, None].expand(-1, 1, channels))
        neighbor_rows = self.bank_neighbors[self.nearest_entry(worst_patch[:, 0])]
        neighbors = self.memory_bank[neighbor_rows]  # [N, k, C]
        neighbor_dist = (worst_patch - neighbors).pow(2).sum(dim=2).clamp_min(0.0).sqrt()
        weight = 1.0 - torch.softmax(neighbor_dist, dim=1)[:, 0]
        return patch_map, weight * top_dist.mean(dim=1)
