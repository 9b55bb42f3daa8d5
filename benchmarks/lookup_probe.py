"""Can a model find the fitting candidate in its prompt? A teacher-forced probe, no training.

For each query (valid split by default; simple, medium and hard requests, whose conditions name
the value to look for), the prompt is rendered with a candidate-facts layout, the sft target
(`stages/sft/data.py`) is forced up to the point where it names the chosen title, and every
candidate title is scored by the model's total log-probability as the continuation. Hit@1 is
the share of queries whose best-scored title is the right one (chance: 1 in 20). Layouts:

- ``compact`` / ``index`` / ``none``: the prompt's layout (`--candidate-facts`), the target as
  the sft writes it for compact prompts ("The user wants a film directed by John Woo.\\n\\n"
  then the title; for index prompts the sft now writes the index line first, which is what
  ``index-echo`` forces);
- ``compact-echo`` / ``index-echo``: the same prompt, the forced text ending with the index
  line for the wanted value ("Candidates by director:\\n- John Woo:"), so that in the index
  layout the right title is what follows that same text in the prompt (a copy).

    python benchmarks/lookup_probe.py --workdir ~/rerec-runs/fidelity-smollm2-cpu-compact \\
        --model smollm2-135m --per-family 15 --layouts compact,index,compact-echo,index-echo

``--model`` is a model artifact, a policy with full weights (an sft) or a folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import machine  # noqa: E402

FAMILIES = ("simple", "medium", "hard")


def title_scores(net, tok, prefix_ids: list[int], titles: list[str]) -> list[float]:
    """Total log-probability of each title after the prefix: the prefix once, then every title
    in one batch over a copy of its cache (right-padded; padding is never scored)."""
    import torch

    with torch.no_grad():
        out = net(torch.tensor([prefix_ids]), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1], -1)
        seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in titles]
        n, width, length = len(seqs), max(map(len, seqs)), len(prefix_ids)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        rest = net(
            ids,
            past_key_values=cache,
            attention_mask=torch.ones(n, length + width, dtype=torch.long),
            position_ids=torch.arange(length, length + width).expand(n, width),
            use_cache=False,
        )
        lp = torch.log_softmax(rest.logits, -1)
    return [
        first[s[0]].item() + sum(lp[k, t - 1, s[t]].item() for t in range(1, len(s)))
        for k, s in enumerate(seqs)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=os.environ.get("REREC_WORKDIR", "workdir"))
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--split", default="valid")
    p.add_argument("--per-family", type=int, default=15)
    p.add_argument("--layouts", default="compact,index,compact-echo,index-echo")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import numpy as np
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stages.core.store import ArtifactStore
    from stages.llm.models import resolve_model
    from stages.llm.prompts import render_messages
    from stages.queries.reader import read_split
    from stages.sft.data import conditions_wanted, write_completions

    torch.set_num_threads(a.threads)
    store = ArtifactStore(a.workdir)
    queries = store.resolve("queries")
    graph = store.input_of(queries, "graph")
    split = read_split(queries, a.split)
    rows = pl.concat([split.filter(pl.col("family") == f).head(a.per_family) for f in FAMILIES])
    facts = (
        graph.read("item_attributes")
        .join(graph.read("attributes"), on="attr_id")
        .select("item_id", "attr_id", "relation", "value")
    )
    targets = write_completions(rows, facts, 0, "film")
    _, path = resolve_model(store, a.model)
    tok = AutoTokenizer.from_pretrained(path)
    net = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    print(machine())
    print(f"{a.model} ({path}); {a.split} split, {rows.height} queries; chance 0.05")
    for layout in a.layouts.split(","):
        echo = layout.endswith("-echo")
        mode = layout.removesuffix("-echo")
        hits, started = [], time.perf_counter()
        for q, target in zip(rows.to_dicts(), targets, strict=True):
            right = q["candidate_titles"][q["positive_index"]]
            forced = target[: target.find(right)]
            if echo:
                relation, value = conditions_wanted(q["conditions"])[0]
                forced = forced.rstrip() + f"\n\nCandidates by {relation}:\n- {value}:"
            messages = render_messages(q, candidate_facts=mode, named_facts=True)
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(text + forced, add_special_tokens=False)["input_ids"]
            titles = [(" " + t) if echo else t for t in q["candidate_titles"]]
            best = int(np.argmax(title_scores(net, tok, ids, titles)))
            hits.append({"family": q["family"], "hit": best == q["positive_index"]})
        table = pl.DataFrame(hits)
        by = table.group_by("family").agg(pl.col("hit").mean(), n=pl.len()).sort("family")
        cells = ", ".join(f"{f} {h:.3f} (n={n})" for f, h, n in by.iter_rows())
        print(
            f"{layout:>13}: hit@1 {table['hit'].mean():.3f} ({int(table['hit'].sum())}/"
            f"{table.height}); {cells}; {time.perf_counter() - started:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
