"""Request texts from paraphrase templates chosen by seed."""

from __future__ import annotations

import numpy as np
import polars as pl

from stages.queries.reader import NOUN


def _with_article(phrase: pl.Expr) -> pl.Expr:
    return (
        pl.when(phrase.str.contains(r"^[aeiouAEIOU]"))
        .then(pl.format("an {}", phrase))
        .otherwise(pl.format("a {}", phrase))
    )


_DIRECT = {  # relation -> paraphrases of "has value v"
    "director": ("directed by {}", "by director {}"),
    "writer": ("written by {}", "from a screenplay by {}"),
    "cast": ("starring {}", "featuring {}"),
    "language": ("in {}", "with dialogue in {}"),
    "country": ("made in {}", "produced in {}"),
    "decade": ("from the {}", "released in the {}"),
    "author": ("by {}", "written by {}"),
    "publisher": ("published by {}", "from the publisher {}"),
}
_VIA = {  # relation -> paraphrases of "has the value item x has"
    "director": ("directed by the director of {}", "by whoever directed {}"),
    "writer": ("written by the writer of {}", "by the screenwriter of {}"),
    "cast": ("starring the star of {}", "with the lead of {}"),
    "author": ("by the author of {}", "written by whoever wrote {}"),
    "publisher": ("from the publisher of {}", "published by the house that published {}"),
}
_SAME = {
    "director": "by the same director",
    "writer": "by the same writer",
    "cast": "with the same star",
    "author": "by the same author",
    "publisher": "from the same publisher",
}
_REQUEST = (  # {anp}: the noun phrase with its article ("an action film")
    "Can you recommend {anp} {c}?",
    "I'm looking for {anp} {c}. Any suggestions?",
    "Suggest {anp} {c}, please.",
    "What {np} {c} should I {verb} next?",
)
_HARD = (
    "I loved {ref}, the {noun} {false}. Can you recommend another {noun} {same}?",
    "{ref} ({false}) is one of my favourites. Which other {noun} {same} would you suggest?",
    "After {ref}, which was {false}, I want another {noun} {same}. What do you recommend?",
)
_INTEREST = (
    "I recently enjoyed {h}, in that order. What should I {verb} next?",
    "These are the last {noun}s I liked, oldest first: {h}. Recommend what comes next for me.",
    "My recent favourites were {h}. Which {noun} would you suggest now?",
)


def _phrase(
    table: dict[str, tuple[str, ...]], relation: pl.Expr, value: pl.Expr, variant: pl.Expr
) -> pl.Expr:
    expr = pl.lit(None, pl.String)
    for rel, forms in table.items():
        for n, form in enumerate(forms):
            expr = (
                pl.when((relation == rel) & (variant % len(forms) == n))
                .then(pl.format(form, value))
                .otherwise(expr)
            )
    return expr


def _with_the(relation: pl.Expr, value: pl.Expr) -> pl.Expr:
    """'made in the United States', 'in the Netherlands'."""
    needs = (relation == "country") & value.str.contains(
        r"^(United |Netherlands$|Czech Republic$|Soviet Union$|Philippines$|Bahamas$)"
    )
    return pl.when(needs).then(pl.format("the {}", value)).otherwise(value)


def render_texts(q: pl.DataFrame, domain: str, rng: np.random.Generator) -> pl.DataFrame:
    """Adds ``text`` and ``template`` from the structured conditions."""
    noun, verb = NOUN.get(domain, ("item", "try"))
    q = q.with_columns(variant=pl.Series(rng.integers(0, 1 << 30, q.height)))
    conds = (
        q.select("query_id", "variant", "conditions")
        .explode("conditions")
        .drop_nulls("conditions")
        .unnest("conditions")
    )
    conds = conds.with_columns(
        phrase=pl.when(pl.col("relation") == "genre")
        .then(None)
        .when(pl.col("via_item_id").is_not_null())
        .then(_phrase(_VIA, pl.col("relation"), pl.col("via_title"), pl.col("variant") // 7))
        .otherwise(
            _phrase(
                _DIRECT,
                pl.col("relation"),
                _with_the(pl.col("relation"), pl.col("value")),
                pl.col("variant") // 7,
            )
        ),
        false_phrase=_phrase(
            _DIRECT, pl.col("relation"), pl.col("false_value"), pl.col("variant") // 7
        ),
        same=pl.col("relation").replace_strict(_SAME, default=None),
    )
    agg = conds.group_by("query_id").agg(
        genre=pl.col("value").filter(pl.col("relation") == "genre").first(),
        c=pl.col("phrase").drop_nulls().str.join(" and "),
        ref=pl.col("via_title").first(),
        false=pl.col("false_phrase").first(),
        same=pl.col("same").first(),
    )
    q = q.join(agg, on="query_id", how="left")
    np_expr = (
        pl.when(pl.col("genre").is_not_null())
        .then(pl.format("{} {}", pl.col("genre").str.to_lowercase(), pl.lit(noun)))
        .otherwise(pl.lit(noun))
    )
    v = pl.col("variant")
    text = pl.lit(None, pl.String)
    template = pl.lit(None, pl.String)
    for n, form in enumerate(_REQUEST):
        hit = pl.col("family").is_in(["simple", "medium"]) & (v % len(_REQUEST) == n)
        phrase = _with_article(np_expr) if "{anp}" in form else np_expr
        body = (
            form.replace("{anp}", "{}")
            .replace("{np}", "{}")
            .replace("{c}", "{}")
            .replace("{verb}", verb)
        )
        text = pl.when(hit).then(pl.format(body, phrase, pl.col("c"))).otherwise(text)
        template = pl.when(hit).then(pl.lit(f"request-{n}")).otherwise(template)
    for n, form in enumerate(_HARD):
        hit = (pl.col("family") == "hard") & (v % len(_HARD) == n)
        body = (
            form.replace("{noun}", noun)
            .replace("{ref}", "{}")
            .replace("{false}", "{}")
            .replace("{same}", "{}")
        )
        args = []
        for key in ("ref", "false", "same"):
            idx = form.index("{" + key + "}")
            args.append((idx, pl.col(key)))
        args = [a for _, a in sorted(args, key=lambda t: t[0])]
        text = pl.when(hit).then(pl.format(body, *args)).otherwise(text)
        template = pl.when(hit).then(pl.lit(f"misinformed-{n}")).otherwise(template)
    history = pl.col("history_titles")
    joined = (
        pl.when(history.list.len() > 1)
        .then(
            pl.format(
                "{} and {}",
                history.list.slice(0, history.list.len() - 1).list.join(", "),
                history.list.last(),
            )
        )
        .otherwise(history.list.first())
    )
    for n, form in enumerate(_INTEREST):
        hit = (pl.col("family") == "interest") & (v % len(_INTEREST) == n)
        body = form.replace("{noun}", noun).replace("{verb}", verb).replace("{h}", "{}")
        text = pl.when(hit).then(pl.format(body, joined)).otherwise(text)
        template = pl.when(hit).then(pl.lit(f"interest-{n}")).otherwise(template)
    # Whitespace from an empty condition list (a genre-only request) is tidied away.
    text = text.str.replace_all(r"\s+([?.,])", "$1").str.replace_all(r"\s{2,}", " ")
    return q.with_columns(text=text, template=template).drop(
        "variant", "genre", "c", "ref", "false", "same"
    )
