"""`rerec pretrain-cf`: LightGCN embeddings for users and items, with full-ranking evaluation.

Recipe: read the graph's interactions; split each user's interactions (random 80/10/10 as
RecBole's `RS` split grouped by user, or leave-last-out by time); build the normalised adjacency
of the training pairs once; train with BPR + uniform negatives + Adam in mini-batches; evaluate
on validation after every epoch (full ranking, training items masked); stop early on NDCG@10;
keep the best state; test with training and validation items masked; write the embeddings.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from schemas.cf import METRICS
from stages.cf.config import PretrainCFConfig
from stages.cf.lightgcn import LightGCNRecommender, NegativeSampler, normalized_adjacency
from stages.cf.ranking_metrics import metrics_from_hits, topk_hits
from stages.core.artifact import ArtifactWriter, BuildResult
from stages.core.console import console
from stages.core.devices import pick_device
from stages.core.errors import UserError
from stages.core.store import ArtifactStore

KS = (10, 20)


def split_interactions(
    inter: pl.DataFrame, how: str, valid_ratio: float, test_ratio: float, seed: int
) -> pl.DataFrame:
    """``user_id, item_id, split`` with split in {train, valid, test}; duplicates collapsed.

    The random split is a function of the set of (user, item) pairs and the seed: the pairs
    are sorted before the shuffle, so neither the table's row order nor polars' threads move
    it. Leave-last-out orders by time, ties by the table's row order (the source's order)."""
    pairs = inter.unique(["user_id", "item_id"], keep="first", maintain_order=True)
    if how == "random":
        rng = np.random.default_rng(seed)
        pairs = pairs.sort("user_id", "item_id")
        pairs = pairs.with_columns(order=pl.Series(rng.permutation(pairs.height)))
    else:
        pairs = pairs.with_row_index("row").with_columns(
            order=pl.struct(pl.col("timestamp").fill_null(0), "row").rank("ordinal")
        )
    pairs = pairs.sort("user_id", "order").with_columns(
        pos=pl.int_range(pl.len()).over("user_id"), n=pl.len().over("user_id")
    )
    n = pl.col("n")
    if how == "random":
        # RecBole's _calcu_split_ids: floor of each share; then, while more than one training
        # interaction is left, a share that is between 0 and 1 interaction gets one.
        test0 = (n * test_ratio).floor().cast(pl.Int64)
        valid0 = (n * valid_ratio).floor().cast(pl.Int64)
        train0 = n - test0 - valid0
        bump_test = (train0 > 1) & (n * test_ratio > 0) & (n * test_ratio < 1)
        n_test = test0 + bump_test.cast(pl.Int64)
        train1 = train0 - bump_test.cast(pl.Int64)
        bump_valid = (train1 > 1) & (n * valid_ratio > 0) & (n * valid_ratio < 1)
        n_valid = valid0 + bump_valid.cast(pl.Int64)
    else:
        n_test = pl.when(n >= 2).then(1).otherwise(0)
        n_valid = pl.when(n >= 3).then(1).otherwise(0)
    n_train = n - n_test - n_valid
    split = (
        pl.when(pl.col("pos") < n_train)
        .then(pl.lit("train"))
        .when(pl.col("pos") < n_train + n_valid)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
    )
    return pairs.select("user_id", "item_id", split=split)


class UserItemSets:
    """Items per user as a CSR-like index (users sorted), for masks over user ranges."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int):
        order = torch.argsort(users * n_items + items)
        self.users, self.items = users[order], items[order]
        self.indptr = torch.zeros(n_users + 1, dtype=torch.int64)
        self.indptr[1:] = torch.cumsum(torch.bincount(self.users, minlength=n_users), 0)
        self.n_items = n_items

    def counts(self, lo: int, hi: int) -> torch.Tensor:
        return self.indptr[lo + 1 : hi + 1] - self.indptr[lo:hi]

    def dense(self, lo: int, hi: int, device: torch.device) -> torch.Tensor:
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        mask = torch.zeros(hi - lo, self.n_items, dtype=torch.bool, device=device)
        mask[(self.users[a:b] - lo).to(device), self.items[a:b].to(device)] = True
        return mask


@torch.no_grad()
def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    exclude: list[UserItemSets],
    truth: UserItemSets,
    batch_users: int,
) -> dict[str, float]:
    """Mean full-ranking metrics over users with at least one ``truth`` item."""
    n_users = user_emb.shape[0]
    sums = {m: 0.0 for m in METRICS}
    counted = 0
    for lo in range(0, n_users, batch_users):
        hi = min(lo + batch_users, n_users)
        n_rel = truth.counts(lo, hi).to(user_emb.device)
        if int((n_rel > 0).sum()) == 0:
            continue
        scores = user_emb[lo:hi] @ item_emb.T
        for sets in exclude:
            scores = scores.masked_fill(sets.dense(lo, hi, scores.device), -torch.inf)
        hits = topk_hits(scores, truth.dense(lo, hi, scores.device), max(KS))
        keep = n_rel > 0
        values = metrics_from_hits(hits[keep], n_rel[keep], KS)
        for m in METRICS:
            sums[m] += float(values[m].sum())
        counted += int(keep.sum())
    return {m: round(sums[m] / max(counted, 1), 6) for m in METRICS}


@dataclass
class TrainResult:
    model: LightGCNRecommender
    user_emb: torch.Tensor | None = None  # final embeddings of the best state
    item_emb: torch.Tensor | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def float_reproducibility(device: torch.device) -> str:
    """What the manifest promises about the embeddings' bits (the split, the epoch count and
    every non-float table are exact in any case)."""
    if device.type == "cpu":
        return (
            "bit-identical for the same graph, config and seed on one CPU type and torch build, "
            "whatever the thread count; another CPU type or torch build may change the last bits "
            "(about 1e-7 relative)"
        )
    return (
        f"not guaranteed bit-identical on {device.type}: GPU kernels that add with atomics (the "
        "gradient scatter) may change the last bits (about 1e-7 relative) from run to run; "
        "the split is exact"
    )


def train_lightgcn(
    split: pl.DataFrame,
    n_users: int,
    n_items: int,
    cfg: PretrainCFConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train on the ``train`` pairs of ``split``, early-stop on valid NDCG@10, test the best."""
    device = torch.device(pick_device(cfg.device))
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

    def tensors(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        sub = split.filter(pl.col("split") == part)
        return (
            torch.from_numpy(sub["user_id"].to_numpy().astype(np.int64)),
            torch.from_numpy(sub["item_id"].to_numpy().astype(np.int64)),
        )

    tu, ti = tensors("train")
    if tu.numel() == 0:
        raise UserError("no training interactions: the graph has none, or the split left none")
    sets = {
        part: UserItemSets(*tensors(part), n_users, n_items) for part in ("train", "valid", "test")
    }
    adj = normalized_adjacency(tu, ti, n_users, n_items).to(device)
    model = LightGCNRecommender(n_users, n_items, cfg.embedding_dim, cfg.layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = NegativeSampler(tu, ti, n_items, generator)
    result = TrainResult(model=model)
    has_valid = int(sets["valid"].indptr[-1]) > 0
    best, best_state, bad = -math.inf, copy.deepcopy(model.state_dict()), 0
    n_train = tu.numel()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        started = time.perf_counter()
        perm = torch.randperm(n_train, generator=generator)
        total, steps = 0.0, 0
        for lo in range(0, n_train, cfg.batch_size):
            idx = perm[lo : lo + cfg.batch_size]
            users, pos = tu[idx], ti[idx]
            neg = sampler.sample(users)
            loss, _ = model.bpr_loss(
                adj, users.to(device), pos.to(device), neg.to(device), cfg.reg_weight
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        train_seconds = time.perf_counter() - started
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            user_emb, item_emb = model(adj)
        valid = (
            evaluate(user_emb, item_emb, [sets["train"]], sets["valid"], cfg.eval_batch_users)
            if has_valid
            else {m: 0.0 for m in METRICS}
        )
        row = {
            "epoch": epoch,
            "loss": total / steps,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - started,
            **{f"valid_{m}": v for m, v in valid.items()},
        }
        result.curve.append(row)
        if on_epoch is not None:
            on_epoch(row)
        value = valid["ndcg@10"]
        if value >= best:  # ties count as progress, as in RecBole's early stopping
            best, bad, result.best_epoch = value, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad > cfg.patience:
                result.stopped_early = True
                break
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        user_emb, item_emb = model(adj)
    result.user_emb, result.item_emb = user_emb, item_emb
    result.valid = evaluate(
        user_emb, item_emb, [sets["train"]], sets["valid"], cfg.eval_batch_users
    )
    result.test = evaluate(
        user_emb, item_emb, [sets["train"], sets["valid"]], sets["test"], cfg.eval_batch_users
    )
    return result


def _embedding_table(key: str, emb: torch.Tensor) -> pl.DataFrame:
    values = emb.detach().to("cpu", torch.float32).numpy()
    return pl.DataFrame(
        {
            key: pl.Series(np.arange(values.shape[0], dtype=np.int32)),
            "embedding": pl.Series(values, dtype=pl.Array(pl.Float32, values.shape[1])),
        }
    )


def pretrain_cf(
    store: ArtifactStore,
    cfg: PretrainCFConfig,
    *,
    force: bool = False,
    command: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> BuildResult:
    graph = store.resolve(cfg.graph, kind="graph")
    name = cfg.artifact_name(graph.name)
    # `auto` is resolved before the version id: embeddings trained on a GPU are not the CPU's
    # bit for bit, so the device they were trained on is part of what they are
    cfg = cfg.model_copy(update={"device": pick_device(cfg.device)})

    def build(writer: ArtifactWriter) -> None:
        n_users = graph.manifest.row_counts["users"]
        n_items = graph.manifest.row_counts["items"]
        inter = graph.read("interactions").select("user_id", "item_id", "timestamp")
        if inter.height == 0:
            raise UserError(f"{graph.ref} has no interactions to learn from")
        split = split_interactions(inter, cfg.split, cfg.valid_ratio, cfg.test_ratio, cfg.seed)
        result = train_lightgcn(split, n_users, n_items, cfg, on_epoch)
        model = result.model
        assert result.item_emb is not None and result.user_emb is not None
        writer.write_table("item_embeddings", _embedding_table("item_id", result.item_emb))
        writer.write_table("user_embeddings", _embedding_table("user_id", result.user_emb))
        writer.write_table("split", split)
        writer.write_table("curve", pl.DataFrame(result.curve))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            str(writer.file("model.safetensors")),
        )
        train_secs = [r["train_seconds"] for r in result.curve]
        writer.metrics.update(
            users=n_users,
            items=n_items,
            train_interactions=int((split["split"] == "train").sum()),
            valid_interactions=int((split["split"] == "valid").sum()),
            test_interactions=int((split["split"] == "test").sum()),
            epochs=len(result.curve),
            best_epoch=result.best_epoch,
            stopped_early=result.stopped_early,
            float_reproducibility=float_reproducibility(torch.device(pick_device(cfg.device))),
            median_train_seconds_per_epoch=round(float(np.median(train_secs)), 4),
            valid=result.valid,
            test=result.test,
        )

    return store.build(name, config=cfg, inputs=[graph], build=build, force=force, command=command)


def epoch_printer() -> Callable[[dict[str, Any]], None]:
    """A one-line-per-epoch progress report on stderr."""

    def show(row: dict[str, Any]) -> None:
        console.print(
            f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  "
            f"valid ndcg@10 {row['valid_ndcg@10']:.4f}  recall@20 {row['valid_recall@20']:.4f}  "
            f"({row['train_seconds']:.2f} s train, {row['eval_seconds']:.2f} s eval)",
            highlight=False,
        )

    return show
