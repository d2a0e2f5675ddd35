"""Sentence-aware splitting of documents into overlapping chunks for embedding."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally followed by quotes/brackets) and whitespace, or at a
# blank line. Abbreviations may split early; chunks still overlap, so nothing is lost.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def _hard_wrap(sentence: str, size: int) -> list[str]:
    """A sentence longer than a chunk is cut at word boundaries (or mid-word as a last resort)."""
    pieces: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:size])
            word = word[size:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > size:
            pieces.append(current)
            current = word
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def chunk_text(text: str, *, size: int = 800, overlap: int = 150) -> list[str]:
    """Group whole sentences into chunks of at most `size` characters.

    Consecutive chunks share trailing sentences worth up to `overlap` characters, so a fact
    that straddles a boundary is whole in at least one chunk.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    sentences = [piece for s in split_sentences(text) for piece in _hard_wrap(s, size)]
    chunks: list[str] = []
    window: list[str] = []
    for sentence in sentences:
        if window and len(" ".join([*window, sentence])) > size:
            chunks.append(" ".join(window))
            window = _tail(window, overlap, room=size - len(sentence) - 1)
        window.append(sentence)
    if window:
        chunks.append(" ".join(window))
    return chunks


def _tail(window: list[str], overlap: int, *, room: int) -> list[str]:
    """The last sentences of `window` that fit in `overlap` (and leave room for the next one)."""
    kept: list[str] = []
    length = 0
    for sentence in reversed(window):
        length += len(sentence) + 1
        if length > min(overlap, room):
            break
        kept.insert(0, sentence)
    return kept
