"""`rerec pretrain-cf`: metrics against brute force, the split, sampling, learning, errors."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import schemas
from schemas import ArtifactSchema
from stages.cf.config import PretrainCFConfig
from stages.cf.lightgcn import NegativeSampler, normalized_adjacency
from stages.cf.stage import UserItemSets, evaluate, pretrain_cf, split_interactions
from stages.core.devices import pick_device
from stages.core.errors import UserError
from stages.core.store import ArtifactStore


def write_graph(
    store: ArtifactStore,
    pairs: list[tuple[int, int]],
    n_users: int,
    n_items: int,
    name: str = "graph",
) -> None:
    """A graph artifact with just what pretrain-cf reads."""

    def build(w) -> None:
        w.write_table(
            "items",
            pl.DataFrame(
                {
                    "item_id": range(n_items),
                    "source_id": [str(i) for i in range(n_items)],
                    "title": [f"Item {i}" for i in range(n_items)],
                    "year": [None] * n_items,
                    "domain": ["toys"] * n_items,
                    "external_id": [None] * n_items,
                },
                schema_overrides={"year": pl.Int32, "external_id": pl.String},
            ),
        )
        w.write_table(
            "attributes",
            pl.DataFrame(
                schema={
                    "attr_id": pl.Int32,
                    "relation": pl.String,
                    "value": pl.String,
                    "item_count": pl.Int32,
                }
            ),
        )
        w.write_table(
            "item_attributes", pl.DataFrame(schema={"item_id": pl.Int32, "attr_id": pl.Int32})
        )
        w.write_table(
            "users",
            pl.DataFrame(
                {"user_id": range(n_users), "source_id": [str(u) for u in range(n_users)]}
            ).with_columns(
                age=pl.lit(None, pl.Int32),
                gender=pl.lit(None, pl.String),
                occupation=pl.lit(None, pl.String),
                location=pl.lit(None, pl.String),
            ),
        )
        w.write_table(
            "interactions",
            pl.DataFrame(
                {
                    "user_id": [u for u, _ in pairs],
                    "item_id": [i for _, i in pairs],
                    "rating": [1.0] * len(pairs),
                    "timestamp": list(range(len(pairs))),
                }
            ),
        )
        w.file("graph.duckdb").write_bytes(b"")

    store.build(name, config={"pairs": len(pairs), "seed": hash(tuple(pairs)) % 1000}, build=build)


def planted_clusters(seed: int = 0) -> tuple[list[tuple[int, int]], int, int]:
    """Users 0-19 like items 0-19, users 20-39 like items 20-39; 8 items each."""
    rng = random.Random(seed)
    pairs = []
    for u in range(40):
        base = 0 if u < 20 else 20
        pairs += [(u, base + i) for i in rng.sample(range(20), 8)]
    return pairs, 40, 40


# ------------------------------------------------------------------ metrics
def brute_force(scores: np.ndarray, exclude: list[set[int]], truth: list[set[int]], k: int):
    out = {m: [] for m in ("recall", "ndcg", "hit", "mrr", "precision")}
    for u, row in enumerate(scores):
        if not truth[u]:
            continue
        ranked = [
            i for i in sorted(range(len(row)), key=lambda i: (-row[i], i)) if i not in exclude[u]
        ][:k]
        hits = [1 if i in truth[u] else 0 for i in ranked]
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(truth[u]), k)))
        out["recall"].append(sum(hits) / len(truth[u]))
        out["ndcg"].append(dcg / idcg)
        out["hit"].append(1.0 if any(hits) else 0.0)
        out["mrr"].append(next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0))
        out["precision"].append(sum(hits) / k)
    return {f"{m}@{k}": float(np.mean(v)) for m, v in out.items()}


def test_metrics_match_a_brute_force_computation() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items = 13, 30
    users_emb = torch.from_numpy(rng.normal(size=(n_users, 4)).astype(np.float32))
    items_emb = torch.from_numpy(rng.normal(size=(n_items, 4)).astype(np.float32))
    scores = (users_emb @ items_emb.T).numpy()
    exclude = [
        set(rng.choice(n_items, size=rng.integers(0, 6), replace=False).tolist())
        for _ in range(n_users)
    ]
    truth = []
    for u in range(n_users):
        free = [i for i in range(n_items) if i not in exclude[u]]
        truth.append(set(rng.choice(free, size=rng.integers(0, 7), replace=False).tolist()))
    truth[3] = set()  # a user without test items is not averaged in

    def sets(per_user: list[set[int]]) -> UserItemSets:
        pairs = [(u, i) for u, s in enumerate(per_user) for i in sorted(s)]
        return UserItemSets(
            torch.tensor([u for u, _ in pairs], dtype=torch.int64),
            torch.tensor([i for _, i in pairs], dtype=torch.int64),
            n_users,
            n_items,
        )

    got = evaluate(users_emb, items_emb, [sets(exclude)], sets(truth), batch_users=5)
    want = {**brute_force(scores, exclude, truth, 10), **brute_force(scores, exclude, truth, 20)}
    assert got == pytest.approx(want, abs=1e-6)


def test_metrics_by_hand() -> None:
    # One user, relevant items {1, 3}; ranking 0,1,2,3 by score; item 0 excluded.
    user = torch.tensor([[1.0]])
    items = torch.tensor([[4.0], [3.0], [2.0], [1.0]] + [[-1.0]] * 20)
    excl = UserItemSets(torch.tensor([0]), torch.tensor([0]), 1, 24)
    truth = UserItemSets(torch.tensor([0, 0]), torch.tensor([1, 3]), 1, 24)
    m = evaluate(user, items, [excl], truth, batch_users=1)
    # Ranked after masking: 1 (hit), 2, 3 (hit): DCG = 1 + 1/log2(4) = 1.5;
    # IDCG = 1 + 1/log2(3).
    assert m["ndcg@10"] == pytest.approx(1.5 / (1 + 1 / math.log2(3)), abs=1e-6)
    assert m["recall@10"] == 1.0 and m["mrr@10"] == 1.0 and m["precision@10"] == 0.2


# ------------------------------------------------------------------ split and sampling
def test_random_split_follows_recboles_counts() -> None:
    sizes = {0: 10, 1: 5, 2: 2, 3: 1, 4: 25}
    inter = pl.DataFrame(
        {
            "user_id": [u for u, n in sizes.items() for _ in range(n)],
            "item_id": [i for n in sizes.values() for i in range(n)],
            "timestamp": [0] * sum(sizes.values()),
        }
    )
    split = split_interactions(inter, "random", 0.1, 0.1, seed=1)
    counts = {(u, s): n for u, s, n in split.group_by("user_id", "split").len().iter_rows()}
    expect = {0: (8, 1, 1), 1: (3, 1, 1), 2: (1, 0, 1), 3: (1, 0, 0), 4: (21, 2, 2)}
    for u, (tr, va, te) in expect.items():
        assert (
            counts.get((u, "train"), 0),
            counts.get((u, "valid"), 0),
            counts.get((u, "test"), 0),
        ) == (tr, va, te)
    assert split_interactions(inter, "random", 0.1, 0.1, seed=1).equals(split)
    assert not split_interactions(inter, "random", 0.1, 0.1, seed=2).equals(split)


def test_leave_last_out_uses_time() -> None:
    inter = pl.DataFrame(
        {
            "user_id": [0, 0, 0, 0, 1, 1],
            "item_id": [5, 6, 7, 8, 1, 2],
            "timestamp": [40, 10, 30, 20, 2, 1],
        }
    )
    split = split_interactions(inter, "leave-last-out", 0.1, 0.1, seed=0)
    got = {(u, i): s for u, i, s in split.iter_rows()}
    assert got == {
        (0, 6): "train",
        (0, 8): "train",
        (0, 7): "valid",
        (0, 5): "test",
        (1, 2): "train",
        (1, 1): "test",
    }


def test_negative_sampler_never_returns_a_training_item() -> None:
    users = torch.tensor([0] * 9 + [1])
    items = torch.tensor(list(range(9)) + [3])
    sampler = NegativeSampler(users, items, 10, torch.Generator().manual_seed(0))
    negs = sampler.sample(torch.tensor([0] * 500 + [1] * 500))
    assert (negs[:500] == 9).all()  # user 0 has seen everything else
    assert not (negs[500:] == 3).any() and len(set(negs[500:].tolist())) == 9


def test_adjacency_is_symmetric_normalised() -> None:
    adj = normalized_adjacency(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 2, 2)
    dense = adj.to_dense()
    # deg(u0)=2, deg(u1)=1, deg(i0)=1, deg(i1)=2
    assert torch.allclose(dense, dense.T)
    assert dense[0, 2] == pytest.approx(1 / math.sqrt(2 * 1))
    assert dense[0, 3] == pytest.approx(1 / math.sqrt(2 * 2))
    assert dense[1, 3] == pytest.approx(1 / math.sqrt(1 * 2))
    assert dense[1, 2] == 0


# ------------------------------------------------------------------ the whole stage
SMALL = dict(embedding_dim=16, batch_size=64, lr=0.01, patience=50)


def test_planted_clusters_are_learned(store: ArtifactStore) -> None:
    pairs, n_users, n_items = planted_clusters()
    write_graph(store, pairs, n_users, n_items)
    art = pretrain_cf(store, PretrainCFConfig(epochs=40, **SMALL)).artifact
    curve = art.read("curve")
    assert curve["loss"][-1] < 0.5 * curve["loss"][0]
    users = np.stack(art.read("user_embeddings")["embedding"].to_numpy())
    items = np.stack(art.read("item_embeddings")["embedding"].to_numpy())
    seen = {}
    for u, i in pairs:
        seen.setdefault(u, set()).add(i)
    in_cluster = 0
    for u in range(n_users):
        ranked = [i for i in np.argsort(-(items @ users[u])) if i not in seen[u]][:5]
        in_cluster += sum((i < 20) == (u < 20) for i in ranked)
    assert in_cluster / (5 * n_users) > 0.9
    assert art.manifest.metrics["test"]["hit@10"] > 0.5
    assert art.read("item_embeddings").height == n_items


def test_same_seed_same_embeddings(tmp_path: Path) -> None:
    pairs, n_users, n_items = planted_clusters()
    runs = []
    for name in ("a", "b"):
        store = ArtifactStore(tmp_path / name)
        write_graph(store, pairs, n_users, n_items)
        art = pretrain_cf(store, PretrainCFConfig(epochs=3, **SMALL)).artifact
        runs.append(np.stack(art.read("item_embeddings")["embedding"].to_numpy()))
    np.testing.assert_array_equal(runs[0], runs[1])
    store = ArtifactStore(tmp_path / "a")
    # --device auto is recorded resolved: here, the same version as an explicit cpu run
    first = store.resolve("cf")
    assert first.manifest.config["device"] == pick_device("auto")
    again = pretrain_cf(store, PretrainCFConfig(epochs=3, device=pick_device("auto"), **SMALL))
    assert again.skipped and again.artifact.version == first.version
    other = pretrain_cf(store, PretrainCFConfig(epochs=3, seed=5, **SMALL)).artifact
    assert not np.array_equal(
        np.stack(other.read("item_embeddings")["embedding"].to_numpy()), runs[0]
    )


def test_cli_writes_embeddings_for_every_item(rerec, store: ArtifactStore) -> None:
    pairs, n_users, n_items = planted_clusters()
    write_graph(store, pairs, n_users + 2, n_items + 3)  # 3 items nobody has seen
    result = rerec("pretrain-cf", "--epochs", "2", "--embedding-dim", "8", "--batch-size", "64")
    assert result.exit_code == 0, result.stderr
    assert "test" in result.stdout and "ndcg@10" in result.stdout
    art = store.resolve("cf")
    assert art.read("item_embeddings").height == n_items + 3
    assert art.read("user_embeddings").height == n_users + 2
    assert art.read("item_embeddings")["embedding"].dtype == pl.Array(pl.Float32, 8)
    assert [i.name for i in art.manifest.inputs] == ["graph"]
    assert (art.path / "model.safetensors").stat().st_size > 0


def test_missing_graph_is_a_clear_error(rerec, store: ArtifactStore) -> None:
    result = rerec("pretrain-cf")
    assert result.exit_code == 2
    assert "no artifact 'graph'" in result.stderr and "rerec build-graph" in result.stderr


def test_old_schema_graph_is_refused(rerec, store: ArtifactStore, monkeypatch) -> None:
    pairs, n_users, n_items = planted_clusters()
    write_graph(store, pairs, n_users, n_items)
    newer = ArtifactSchema(**{**schemas.ARTIFACTS["graph"].__dict__, "version": 99})
    monkeypatch.setitem(schemas.ARTIFACTS, "graph", newer)
    result = rerec("pretrain-cf", "--epochs", "1")
    assert result.exit_code == 2
    assert "has schema version 1 but this rerec reads version 99" in result.stderr
    assert "rerec build-graph --force" in result.stderr


def test_bad_device_and_options(store: ArtifactStore) -> None:
    pairs, n_users, n_items = planted_clusters()
    write_graph(store, pairs, n_users, n_items)
    with pytest.raises(UserError, match="not a torch device"):
        pretrain_cf(store, PretrainCFConfig(device="tpu9"))
    with pytest.raises(ValueError, match="leave something to train on"):
        PretrainCFConfig(valid_ratio=0.5, test_ratio=0.5)


def test_symmetric_conv_matches_pyg_lightgcn_values_and_gradients() -> None:
    from torch_geometric.nn.models import LightGCN

    from stages.cf.lightgcn import LightGCNRecommender

    pairs, n_users, n_items = planted_clusters()
    adj = normalized_adjacency(
        torch.tensor([u for u, _ in pairs]), torch.tensor([i for _, i in pairs]), n_users, n_items
    )
    ours = LightGCNRecommender(n_users, n_items, 8, 3)
    stock = LightGCN(n_users + n_items, 8, 3, normalize=False)
    stock.embedding.weight.data.copy_(ours.gcn.embedding.weight.data)
    a, b = ours.gcn.get_embedding(adj), stock.get_embedding(adj)
    torch.testing.assert_close(a, b)
    (a**2).sum().backward()
    (b**2).sum().backward()
    torch.testing.assert_close(ours.gcn.embedding.weight.grad, stock.embedding.weight.grad)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ranking_metrics_agree_with_pyg_link_prediction_metrics(k: int) -> None:
    """Our full-ranking metrics against torch-geometric's LinkPred* implementations on random
    scores and relevant sets (every user has at least one relevant item)."""
    from torch_geometric import metrics as pyg

    from stages.cf.ranking_metrics import metrics_from_hits, topk_hits

    gen = torch.Generator().manual_seed(k)
    n_users, n_items = 40, 60
    scores = torch.rand(n_users, n_items, generator=gen, dtype=torch.float64)
    relevant = torch.rand(n_users, n_items, generator=gen) < 0.08
    relevant[torch.arange(n_users), torch.randint(n_items, (n_users,), generator=gen)] = True
    ours = metrics_from_hits(topk_hits(scores, relevant, k), relevant.sum(1), (k,))
    top = torch.topk(scores, k, dim=1, sorted=True).indices
    users, items = relevant.nonzero(as_tuple=True)
    theirs = {
        "recall": pyg.LinkPredRecall(k),
        "precision": pyg.LinkPredPrecision(k),
        "ndcg": pyg.LinkPredNDCG(k),
        "mrr": pyg.LinkPredMRR(k),
        "hit": pyg.LinkPredHitRatio(k),
    }
    for name, metric in theirs.items():
        metric.update(top, (users, items))
        assert float(metric.compute()) == pytest.approx(float(ours[f"{name}@{k}"].mean()), abs=1e-6)
