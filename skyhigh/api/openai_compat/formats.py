"""A transcript in OpenAI's response shapes: json, text, srt, vtt, verbose_json, and SSE events.

SRT and WebVTT come from skyhigh.speech.subtitles, the same renderers as
`GET /events/{id}/transcript`.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Literal

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from skyhigh.api.live import sse_event
from skyhigh.domain.events import Segment, Transcript
from skyhigh.speech.subtitles import to_srt, to_text, to_vtt

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
Task = Literal["transcribe", "translate"]

# OpenAI's verbose_json names the language in full ("english"), as whisper.tokenizer.LANGUAGES
# does; kept here so a process that only serves the API never imports torch through whisper
# (tests keep the two in sync).
_LANGUAGES = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
    "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek "
    "ms:malay cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai "
    "ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh "
    "sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani "
    "sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
    "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili "
    "gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali "
    "af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati "
    "am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian_creole ps:pashto tk:turkmen "
    "nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan tl:tagalog "
    "mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
    "jw:javanese su:sundanese yue:cantonese"
)
LANGUAGE_NAMES: dict[str, str] = {
    code: name.replace("_", " ") for code, name in (pair.split(":") for pair in _LANGUAGES.split())
}

_FRAMES_PER_SECOND = 100  # whisper's mel frames: `seek` counts these


def render(
    transcript: Transcript,
    *,
    response_format: ResponseFormat,
    task: Task,
    words: bool,
    headers: dict[str, str],
) -> Response:
    """The HTTP answer for one finished transcription or translation."""
    if response_format == "json":
        return JSONResponse({"text": transcript.text}, headers=headers)
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(transcript, task=task, words=words), headers=headers)
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt", headers=headers)
    text = to_srt(transcript) if response_format == "srt" else to_text(transcript)
    return PlainTextResponse(text, headers=headers)  # OpenAI sends SRT as text/plain too


def verbose_json(transcript: Transcript, *, task: Task, words: bool) -> dict[str, Any]:
    # A translation's language is that of its text, always English (OpenAI's TranslationVerbose).
    code = "en" if task == "translate" else transcript.language
    body: dict[str, Any] = {
        "task": task,
        "language": LANGUAGE_NAMES.get(code, code),
        "duration": transcript.duration_s,
        "text": transcript.text,
        "segments": [verbose_segment(segment) for segment in transcript.segments],
    }
    if words:
        body["words"] = [
            {"word": word.word, "start": word.start, "end": word.end}
            for segment in transcript.segments
            for word in segment.words or ()
        ]
    return body


def verbose_segment(segment: Segment) -> dict[str, Any]:
    """OpenAI's segment; what the engine did not report is derived (see the README). A
    diarized transcript's segments also carry `speaker`."""
    speaker = {} if segment.speaker is None else {"speaker": segment.speaker}
    return {
        **speaker,
        "id": segment.id,
        "seek": segment.seek
        if segment.seek is not None
        else int(segment.start * _FRAMES_PER_SECOND),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": segment.tokens or [],
        "temperature": segment.temperature or 0.0,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio
        if segment.compression_ratio is not None
        else compression_ratio(segment.text),
        "no_speech_prob": segment.no_speech_prob,
    }


def compression_ratio(text: str) -> float:
    """As whisper computes it (whisper.utils.compression_ratio): raw over zlib-compressed size."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def sse(data: dict[str, Any]) -> str:
    """One Server-Sent Event as OpenAI sends them: a `data:` line, no event name."""
    return sse_event(json.dumps(data, separators=(",", ":")))


def delta_event(delta: str) -> str:
    return sse({"type": "transcript.text.delta", "delta": delta})


def done_event(text: str) -> str:
    return sse({"type": "transcript.text.done", "text": text})
