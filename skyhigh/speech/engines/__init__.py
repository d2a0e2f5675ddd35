"""The speech engines, one module each; importing this package registers them all
(skyhigh.speech.registry). See skyhigh.speech.protocol for how another one plugs in."""

from skyhigh.speech.engines import faster_whisper, openai_whisper

__all__ = ["faster_whisper", "openai_whisper"]
