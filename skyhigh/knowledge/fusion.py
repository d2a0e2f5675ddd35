"""Hybrid ranking: one ordering from the vector and the full-text candidates of a query.

Plain reciprocal-rank fusion (RRF) over two short lists lost exact matches: for a
booking code among short nonsense documents, the vector side ranked nonsense first, the right
document was not in the vector list at all, both ended at 1/61 and the tie fell the wrong way.
Three changes fix the cause rather than the query:

1. Every candidate is ranked by both signals. Rows that only one search returned are scored on
   the other side too (cosine similarity from the row's own vector; BM25 from a full-text query
   restricted to those rows), so a short candidate list no longer reads as "not similar".
2. Exact matches are a third ranking. A row whose title or text holds every query token (codes,
   flight numbers, booking references; case-insensitive, whole tokens) is first in it, so it
   always outranks a row that only one search found: that row's best is 1/(K + 1), and the exact
   match gets 1/(K + 1) plus at least one more term.
3. Ties are broken deterministically: higher cosine similarity, then higher BM25, then id.

Ranks are competition ranks among the candidates ("1224": equal values share a rank), K = 60 as
in Cormack et al. (2009) and LanceDB's RRFReranker.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

RRF_K = 60
# Letters and digits, split at everything else: the token boundaries of the full-text index's
# "simple" tokenizer, so "QZ-8841" is the two tokens "qz" and "8841" on both sides.
_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> frozenset[str]:
    """Case- and accent-insensitive word tokens, as the full-text index folds them."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(char for char in decomposed if not unicodedata.combining(char))
    return frozenset(_TOKEN.findall(folded))


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A row either search returned, with what both searches say about it."""

    id: str
    similarity: float  # cosine similarity to the query vector
    bm25: float | None  # None: no query token matched (full-text search does not find it)
    exact: bool  # title or text holds every query token


@dataclass(frozen=True, kw_only=True)
class Ranked:
    candidate: Candidate
    score: float  # sum of 1/(K + rank) over the rankings that hold the row
    vector_rank: int
    text_rank: int | None

    @property
    def id(self) -> str:
        return self.candidate.id


def is_exact(query_tokens: frozenset[str], *texts: str) -> bool:
    """Whether the texts together hold every query token (never for a query without tokens)."""
    if not query_tokens:
        return False
    found: set[str] = set()
    for text in texts:
        found |= tokens(text)
    return query_tokens <= found


def _competition_ranks(values: dict[str, float]) -> dict[str, int]:
    ordered = sorted(values.values(), reverse=True)
    first_at: dict[float, int] = {}
    for position, value in enumerate(ordered, start=1):
        first_at.setdefault(value, position)
    return {key: first_at[value] for key, value in values.items()}


def fuse(candidates: Sequence[Candidate], *, k_constant: int = RRF_K) -> list[Ranked]:
    """All candidates, best first."""
    vector_ranks = _competition_ranks({c.id: c.similarity for c in candidates})
    text_ranks = _competition_ranks({c.id: c.bm25 for c in candidates if c.bm25 is not None})
    ranked = []
    for candidate in candidates:
        vector_rank = vector_ranks[candidate.id]
        text_rank = text_ranks.get(candidate.id)
        score = 1.0 / (k_constant + vector_rank)
        if text_rank is not None:
            score += 1.0 / (k_constant + text_rank)
        if candidate.exact:
            score += 1.0 / (k_constant + 1)
        ranked.append(
            Ranked(candidate=candidate, score=score, vector_rank=vector_rank, text_rank=text_rank)
        )
    ranked.sort(key=_order)
    return ranked


def _order(ranked: Ranked) -> tuple[float, float, float, str]:
    candidate = ranked.candidate
    bm25 = candidate.bm25 if candidate.bm25 is not None else float("-inf")
    return (-ranked.score, -candidate.similarity, -bm25, candidate.id)
