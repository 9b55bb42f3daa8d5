"""Full-ranking top-K metrics (Recall, NDCG, Hit, MRR, Precision), vectorised per user batch.

Definitions follow RecBole: for a user with relevant set R and ranked list L (training items
removed), hits h_r = [L_r in R] for ranks r = 1..K,

    Recall@K = sum h / |R|          Precision@K = sum h / K         Hit@K = [sum h > 0]
    MRR@K    = 1 / first hit rank   NDCG@K = sum h_r / log2(r + 1) / IDCG,
    IDCG     = sum_{r <= min(|R|, K)} 1 / log2(r + 1),

each averaged over users with at least one relevant item.
"""

from __future__ import annotations

import torch
from torch import Tensor


def topk_hits(scores: Tensor, relevant: Tensor, k: int) -> Tensor:
    """Boolean (users, k): whether the r-th highest-scored item is relevant. ``scores`` must
    already hold -inf for excluded items; ties are broken by item index."""
    top = torch.topk(scores, k, dim=1, sorted=True).indices
    return relevant.gather(1, top)


def metrics_from_hits(hits: Tensor, n_relevant: Tensor, ks: tuple[int, ...]) -> dict[str, Tensor]:
    """Per-user metric values for each K in ``ks`` (hits has at least max(ks) columns)."""
    out: dict[str, Tensor] = {}
    max_k = hits.shape[1]
    ranks = torch.arange(1, max_k + 1, dtype=torch.float64, device=hits.device)
    discount = 1.0 / torch.log2(ranks + 1.0)
    ideal = torch.cumsum(discount, 0)
    h_all = hits.to(torch.float64)
    n_rel = n_relevant.to(torch.float64)
    for k in ks:
        h = h_all[:, :k]
        n_hit = h.sum(1)
        first = torch.where(h.any(1), h.argmax(1).to(torch.float64) + 1, torch.inf)
        idcg = ideal[(n_relevant.clamp(max=k) - 1).clamp(min=0)]
        out[f"recall@{k}"] = n_hit / n_rel
        out[f"ndcg@{k}"] = (h * discount[:k]).sum(1) / idcg
        out[f"hit@{k}"] = (n_hit > 0).to(torch.float64)
        out[f"mrr@{k}"] = 1.0 / first
        out[f"precision@{k}"] = n_hit / k
    return out
