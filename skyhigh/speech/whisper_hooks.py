"""Per-window segment reports from openai-whisper, which has no segment callback.

`whisper.transcribe` decodes 30-second windows in a loop and, right after appending a window's
segments to its local `all_segments`, advances its tqdm progress bar. This module swaps the
`tqdm` name inside `whisper.transcribe`'s module for a thin wrapper whose `update()` also hands
the caller's `all_segments` to a callback registered for the current thread. No extra decoding
work happens, so transcription speed is unchanged; a live subscriber sees each window's segments
as soon as the window is decoded instead of when the whole clip is done.

If a future whisper release renames that local, the callback simply gets nothing and the
transcriber reports the segments after decoding, as before (it only reports unseen ones).
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

WindowCallback = Callable[[list[dict[str, Any]]], None]

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


class _ReportingProgress:
    """A tqdm progress bar (still shown when whisper asks for one) that also reports segments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import tqdm

        self._bar = tqdm.tqdm(*args, **kwargs)

    def __enter__(self) -> _ReportingProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._bar.__exit__(*exc_info)

    def update(self, n: float = 1) -> None:
        self._bar.update(n)
        callback: WindowCallback | None = getattr(_local, "callback", None)
        if callback is None:
            return
        # The caller is whisper.transcribe's loop; its `all_segments` holds every segment so far.
        segments = sys._getframe(1).f_locals.get("all_segments")
        if isinstance(segments, list):
            callback(segments)


def install() -> None:
    """Patch whisper.transcribe once per process (idempotent, thread-safe)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import whisper  # noqa: F401  (loads the whisper.transcribe module)

        module = sys.modules["whisper.transcribe"]
        module.tqdm = types.SimpleNamespace(tqdm=_ReportingProgress)  # type: ignore[attr-defined]
        _installed = True


@contextmanager
def reporting_windows(callback: WindowCallback) -> Iterator[None]:
    """While active, `callback(all_segments)` runs after each window this thread decodes."""
    install()
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous


def transcribe_reporting(
    callback: WindowCallback, model: Any, audio: Any, **options: Any
) -> dict[str, Any]:
    """`whisper.transcribe(model, audio, **options)`, reporting segments after each window."""
    import whisper

    with reporting_windows(callback):
        result: dict[str, Any] = whisper.transcribe(model, audio, **options)
    return result
