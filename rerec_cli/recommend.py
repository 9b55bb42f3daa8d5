"""`rerec recommend`: ask for recommendations in plain words, answered from the catalogue."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from rerec_cli.app import app, state
from rerec_cli.output import out
from stages.core.errors import UserError


@app.command("recommend")
def recommend_command(
    request: Annotated[str | None, typer.Argument(help="what you are looking for")] = None,
    user: Annotated[int | None, typer.Option(help="personalise for this user id")] = None,
    policy: Annotated[
        str | None, typer.Option(help="policy artifact [default: policy, if trained]")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="use a base model instead (artifact, folder or hub id)")
    ] = None,
    graph: Annotated[
        str | None, typer.Option(help="catalogue [default: the policy's graph, else graph]")
    ] = None,
    cf: Annotated[str | None, typer.Option(help="LightGCN embeddings for --user")] = None,
    k: Annotated[int, typer.Option(help="recommendations to give", min=1)] = 5,
    candidates: Annotated[int, typer.Option(help="catalogue items the model sees", min=1)] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="generated tokens at most", min=1)] = 384,
    temperature: Annotated[float, typer.Option(help="0: greedy", min=0)] = 0.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    chat: Annotated[bool, typer.Option("--chat", help="keep asking; later turns refine")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not tables")] = False,
    allow_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-mismatch",
            help="go on although the policy, graph and cf come from different versions of a "
            "common input (a warning)",
        ),
    ] = False,
) -> None:
    """Recommend catalogue items for an open-ended request: retrieve candidates from the graph
    (attributes and titles named in the request; the user's LightGCN top items with --user),
    let the policy reason and choose, and show its reasoning and the evidence."""
    from stages.assistant.stage import Assistant, Catalogue
    from stages.llm.generation import load_generator

    if request is None and not chat:
        raise UserError('give a request, e.g. rerec recommend "a comedy directed by Woody Allen"')
    stdin = sys.stdin
    if chat and (stdin is None or stdin.closed):
        raise UserError("--chat reads requests from stdin, but stdin is closed")
    interactive = chat and stdin.isatty()
    if chat and request is None and not interactive:
        # Piped requests: read the first before loading the model, so that empty input fails
        # at once (a user at a terminal is prompted once the model is ready).
        request = _next_request(stdin, prompt="")
        if request is None:
            raise UserError(
                "--chat: stdin ended before the first request; pipe requests one per line, "
                'or give the first as an argument: rerec recommend "a comedy" --chat'
            )
    store = state.store
    if policy is None and model is None:
        if store.latest_version("policy"):
            policy = "policy"
        else:
            model = "smollm2-135m"
    # The catalogue, its embeddings and the policy must agree on their ancestors: checked
    # before the model loads.
    info: dict[str, Any] = {}
    policy_art = None
    if policy is not None:
        policy_art = store.resolve(policy, kind="policy")
        info = json.loads(policy_art.file("policy.json").read_text())
    graph_art = store.resolve(graph or info.get("graph") or "graph", kind="graph")
    cf_name = cf or "cf" + graph_art.name.removeprefix("graph")
    cf_art = store.resolve(cf_name, kind="embeddings") if cf or store.exists(cf_name) else None
    store.check_mismatch(
        [a for a in (policy_art, graph_art, cf_art) if a is not None], allow=allow_mismatch
    )
    gen = load_generator(store, policy=policy, model=model, device=device)
    assistant = Assistant(Catalogue(graph_art, cf_art), gen, k=k, n_candidates=candidates)

    def turn(text: str) -> None:
        answer = assistant.ask(
            text, user=user, max_new_tokens=max_new_tokens, temperature=temperature
        )
        if as_json:
            print(json.dumps(to_json(answer, gen.label)), flush=True)
        else:
            show(answer, gen.label)

    # --chat ends at an empty line, `quit`, `exit` or the end of stdin (exit code 0 once a
    # request was answered; a terminal user who quits at the first prompt also gets 0).
    if request is not None:
        turn(request)
    while chat and (text := _next_request(stdin, prompt="you> " if interactive else "")):
        turn(text)


def _next_request(stdin: Any, prompt: str) -> str | None:
    """The next --chat request, or None when the conversation ends."""
    if prompt:
        try:
            text = input(prompt)
        except EOFError:
            print()  # end the prompt's line
            return None
    else:
        line = stdin.readline()
        if not line:
            return None
        text = line.rstrip("\n")
    if text.strip().lower() in {"", "quit", "exit"}:
        return None
    return text


def to_json(answer: Any, label: str) -> dict[str, Any]:
    return {
        "request": answer.request,
        "model": label,
        "recommendations": [
            {"item_id": r.item_id, "title": r.title, "evidence": r.evidence}
            for r in answer.recommendations
        ],
        "chosen_by_model": answer.from_model,
        "reasoning": answer.reasoning,
        "completion": answer.completion,
        "request_attributes": [
            {"relation": m.relation, "value": m.value, "via": m.via} for m in answer.matches
        ],
        "candidates": [c["title"] for c in answer.candidates],
    }


def show(answer: Any, label: str) -> None:
    found = ", ".join(
        f"{m.relation}: {m.value}" + (f" (via {m.via})" if m.via else "") for m in answer.matches
    )
    out.print(
        f"[dim]{label} · request attributes: {found or 'none found'} · "
        f"{len(answer.candidates)} candidates[/dim]"
    )
    if answer.reasoning:
        out.print(f"[bold]reasoning[/bold]\n{answer.reasoning}")
    table = Table(
        title="recommendations"
        if answer.from_model
        else "recommendations (the model named no candidate: the retrieval's best)"
    )
    table.add_column("#", justify="right")
    table.add_column("title")
    table.add_column("evidence")
    for n, r in enumerate(answer.recommendations, start=1):
        table.add_row(str(n), r.title, "; ".join(r.evidence) or "—")
    out.print(table)
