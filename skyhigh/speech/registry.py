"""Speech engines by name: the WHISPER_ENGINE value picks the class registered under it.

    @register_engine
    class MyTranscriber(WhisperTranscriber):
        engine = "my-engine"
        ...

    engine_class("my-engine")   # -> MyTranscriber

skyhigh.speech.engines imports every engine module, so importing it fills the registry.
"""

from __future__ import annotations

from typing import TypeVar

from skyhigh.speech.engine_base import WhisperTranscriber

E = TypeVar("E", bound=type[WhisperTranscriber])

_ENGINES: dict[str, type[WhisperTranscriber]] = {}


def register_engine(cls: E) -> E:
    """Class decorator: make `cls` the engine named `cls.engine`."""
    if cls.engine in _ENGINES:
        raise ValueError(f"speech engine {cls.engine!r} is registered twice")
    _ENGINES[cls.engine] = cls
    return cls


def engine_class(name: str) -> type[WhisperTranscriber]:
    try:
        return _ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(_ENGINES)) or "none"
        raise ValueError(f"unknown speech engine {name!r} (registered: {known})") from None


def engine_names() -> list[str]:
    return sorted(_ENGINES)
