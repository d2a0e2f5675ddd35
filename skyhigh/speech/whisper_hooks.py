"""Per-window segment reports from openai-whisper, which has no segment callback.

`whisper.transcribe` decodes 30-second windows in a loop. With word timestamps on, it hands each
window's segment list to `add_word_timestamps(segments=...)`, finishes the list in place (empty
segments cleared), appends it to the result and advances its tqdm progress bar. Both functions are
names that whisper.transcribe imports at module level, so this module swaps them, once per
process, for wrappers that behave exactly like whisper's own, except on a thread inside
`transcribe_reporting`:

- `add_word_timestamps` also notes the window's segment list;
- the progress bar's `update()` (the window is done) hands every segment so far to the callback.

So that whisper calls the first hook, `transcribe_reporting` always asks for word timestamps.
When its caller did not, the wrappers undo that request: the word alignment is skipped,
`get_end` answers None (word ends are what moves the next window's start in word mode), and
whisper's warning that word timestamps on translations may be unreliable is dropped. Decoding,
seeking and segments are then exactly those of whisper without word timestamps
(tests/test_transcriber.py compares the two). No extra decoding work happens, so transcription
speed is unchanged; a live subscriber sees each window's segments as soon as the window is decoded
instead of when the whole clip is done.

If a future whisper release drops one of these names, nothing is swapped and the transcriber
reports the segments after decoding, as before (it only reports unseen ones).
"""

from __future__ import annotations

import inspect
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

WindowCallback = Callable[[list[dict[str, Any]]], None]

# The names inside whisper.transcribe that the hooks replace.
_HOOKED = ("tqdm", "add_word_timestamps", "get_end", "warnings")
_TRANSLATE_WORDS_WARNING = "Word-level timestamps on translations"


@dataclass
class _Reporting:
    """One `transcribe_reporting` call on this thread."""

    callback: WindowCallback
    words: bool  # the caller asked for word timestamps
    window: list[dict[str, Any]] | None = None  # segments of the window being finished
    segments: list[dict[str, Any]] = field(default_factory=list)  # as whisper's result numbers them


_local = threading.local()
_install_lock = threading.Lock()
_installed: bool | None = None  # None: not tried yet; False: this whisper lacks a hooked name
_whisper_names: dict[str, Any] = {}


def _active() -> _Reporting | None:
    reporting: _Reporting | None = getattr(_local, "reporting", None)
    return reporting


def _add_word_timestamps(*, segments: list[dict[str, Any]], **kwargs: Any) -> None:
    reporting = _active()
    if reporting is None or reporting.words:
        _whisper_names["add_word_timestamps"](segments=segments, **kwargs)
    if reporting is not None:
        reporting.window = segments


def _get_end(segments: list[dict[str, Any]]) -> float | None:
    reporting = _active()
    if reporting is not None and not reporting.words:
        return None  # as if there were no words: the next window starts where whisper's would
    end: float | None = _whisper_names["get_end"](segments)
    return end


class _Warnings:
    """whisper.transcribe's `warnings`, without the caveat about words we asked for ourselves."""

    def __getattr__(self, name: str) -> Any:
        return getattr(warnings, name)

    def warn(
        self, message: Any, category: Any = None, stacklevel: int = 1, source: Any = None
    ) -> None:
        reporting = _active()
        if (
            reporting is not None
            and not reporting.words
            and str(message).startswith(_TRANSLATE_WORDS_WARNING)
        ):
            return
        # One level up: the warning still points at whisper's line, as without the wrapper.
        warnings.warn(message, category, stacklevel + 1, source)


class _ReportingProgress:
    """A tqdm progress bar (still shown when whisper asks for one) that also reports segments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._bar = _whisper_names["tqdm"].tqdm(*args, **kwargs)

    def __enter__(self) -> _ReportingProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._bar.__exit__(*exc_info)

    def update(self, n: float = 1) -> None:
        self._bar.update(n)
        reporting = _active()
        if reporting is None or reporting.window is None:
            return
        # whisper has appended this window to its result with these ids; the list is final now.
        start = len(reporting.segments)
        reporting.segments.extend(
            {"id": index, **segment} for index, segment in enumerate(reporting.window, start)
        )
        reporting.window = None
        reporting.callback(reporting.segments)


class _Tqdm:
    """Stands in for the `tqdm` module inside whisper.transcribe (which calls `tqdm.tqdm`)."""

    tqdm = _ReportingProgress


def install() -> bool:
    """Swap the hooked names in whisper.transcribe once per process (idempotent, thread-safe).

    Returns False, changing nothing, when this whisper lacks one of them.
    """
    global _installed
    with _install_lock:
        if _installed is None:
            import whisper  # loads the whisper.transcribe module

            module = sys.modules["whisper.transcribe"]
            takes_words = "word_timestamps" in inspect.signature(whisper.transcribe).parameters
            _installed = takes_words and all(hasattr(module, name) for name in _HOOKED)
            if _installed:
                _whisper_names.update({name: getattr(module, name) for name in _HOOKED})
                replacements = {
                    "tqdm": _Tqdm,
                    "add_word_timestamps": _add_word_timestamps,
                    "get_end": _get_end,
                    "warnings": _Warnings(),
                }
                for name, replacement in replacements.items():
                    setattr(module, name, replacement)
        return _installed


@contextmanager
def _reporting(reporting: _Reporting) -> Iterator[None]:
    previous = _active()
    _local.reporting = reporting
    try:
        yield
    finally:
        _local.reporting = previous


def transcribe_reporting(
    callback: WindowCallback, model: Any, audio: Any, **options: Any
) -> dict[str, Any]:
    """`whisper.transcribe(model, audio, **options)`, calling `callback(segments so far)` after
    each window."""
    import whisper

    if not install():
        plain: dict[str, Any] = whisper.transcribe(model, audio, **options)
        return plain
    words = bool(options.get("word_timestamps", False))
    if not words:
        # whisper applies it only to word timestamps, so without words it changes nothing.
        options.pop("hallucination_silence_threshold", None)
    with _reporting(_Reporting(callback=callback, words=words)):
        result: dict[str, Any] = whisper.transcribe(
            model, audio, **{**options, "word_timestamps": True}
        )
    return result
