"""SkyHigh client: send events, follow them live, wait for results, send batches.

    python request.py --text "How many bags can I check in for free?" --wait
    python request.py --audio question.wav [--language de] [--wait | --stream] [--format srt]
    python request.py --document policy.txt [--title "Lounge access"] --wait
    python request.py --batch events.jsonl [--concurrency 4] [--no-wait]

--stream follows the event over Server-Sent Events (status changes and transcript segments as
they are decoded); --wait polls. --json prints one JSON document per line instead of text.
Exit status: 0 when every event completed (or was accepted, without --wait/--stream), 1 when
one failed, was refused or the server could not be reached, 2 for bad arguments.

A batch file holds one event per line: a full event {"event_type": ..., "event_data": ...,
"event_id"?: ...}, or a shorthand {"text": "..."}, {"audio": "path", "language"?: "de"} or
{"document": "path", "title"?: "..."}; blank lines and lines starting with # are skipped.

Reads SKYHIGH_URL (default http://127.0.0.1:8000) and API_TOKEN from the environment or
.env (falling back to the first of API_TOKENS there).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict
from tqdm import tqdm

TERMINAL = {"completed", "failed"}
DOCUMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,255}$")


class Refused(Exception):
    """The server did not accept the event (or the stream); the message says why."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code} {detail}")
        self.status_code = status_code
        self.detail = detail


class ClientSettings(BaseSettings):
    """The client's own settings: the environment first, then the .env file."""

    model_config = SettingsConfigDict(extra="ignore")

    skyhigh_url: str = "http://127.0.0.1:8000"
    api_token: str | None = None
    api_tokens: str = ""  # the server's list: its first token is a fine default


def client_config(env_file: Path) -> tuple[str, str | None]:
    settings = ClientSettings(_env_file=env_file if env_file.exists() else None)  # type: ignore[call-arg]
    token = settings.api_token or next(
        (t.strip() for t in settings.api_tokens.split(",") if t.strip()), None
    )
    return settings.skyhigh_url.rstrip("/"), token


# --------------------------------------------------------------------------- building events


@dataclass
class Submission:
    """One event to send: JSON for POST /events/, or an audio file for POST /events/upload."""

    event_id: str
    event: dict[str, Any] | None = None
    audio: Path | None = None
    form: dict[str, str] = field(default_factory=dict)
    label: str = ""


def new_event_id() -> str:
    return str(uuid.uuid4())


def query_submission(text: str, *, k: int, event_id: str | None = None) -> Submission:
    event_id = event_id or new_event_id()
    data = {"text": text, "k": k}
    event = {"event_id": event_id, "event_type": "query", "event_data": data}
    return Submission(event_id, event=event, label=text[:40])


def audio_submission(
    path: Path, *, k: int, language: str | None = None, event_id: str | None = None
) -> Submission:
    # Multipart upload: no base64 inflation, and the server streams the file to disk.
    event_id = event_id or new_event_id()
    form = {"event_id": event_id, "k": str(k)}
    if language:
        form["language"] = language
    return Submission(event_id, audio=path, form=form, label=path.name)


def document_submission(
    path: Path, *, title: str | None = None, event_id: str | None = None
) -> Submission:
    """A .json file is sent as the event_data itself; any other file as the document's text."""
    event_id = event_id or new_event_id()
    if path.suffix.lower() == ".json":
        data: dict[str, Any] = json.loads(path.read_text())
    else:
        data = {"title": title or path.stem.replace("_", " ").replace("-", " "), "text": ""}
        data["text"] = path.read_text()
        if DOCUMENT_ID.match(path.stem):
            data["document_id"] = path.stem  # re-sending the same file replaces it
    if title:
        data["title"] = title
    event = {"event_id": event_id, "event_type": "document", "event_data": data}
    return Submission(event_id, event=event, label=path.name)


def batch_submission(line: str, *, base: Path, k: int) -> Submission:
    """One line of a batch file (see the module docstring); ValueError when malformed."""
    item = json.loads(line)
    if not isinstance(item, dict):
        raise ValueError("each line must be a JSON object")
    event_id = item.get("event_id")
    if "event_type" in item:
        event = {"event_id": event_id or new_event_id(), **item}
        return Submission(event["event_id"], event=event, label=str(item["event_type"]))
    if "text" in item:
        return query_submission(str(item["text"]), k=int(item.get("k", k)), event_id=event_id)
    if "audio" in item:
        language = item.get("language")
        return audio_submission(base / item["audio"], k=k, language=language, event_id=event_id)
    if "document" in item:
        title = item.get("title")
        return document_submission(base / item["document"], title=title, event_id=event_id)
    raise ValueError('expected "event_type", "text", "audio" or "document"')


# --------------------------------------------------------------------------- talking to the API


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(detail, list):  # 422: one entry per problem
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return str(detail)


def send(client: httpx.Client, submission: Submission) -> dict[str, Any]:
    """POST the event; the 202 body, or Refused."""
    if submission.audio is not None:
        with submission.audio.open("rb") as audio:
            files = {"file": (submission.audio.name, audio, "application/octet-stream")}
            response = client.post("/events/upload", data=submission.form, files=files)
    else:
        response = client.post("/events/", json=submission.event)
    if response.status_code != 202:
        raise Refused(response.status_code, _detail(response))
    body: dict[str, Any] = response.json()
    return body


def fetch(client: httpx.Client, event_id: str) -> dict[str, Any]:
    response = client.get(f"/events/{quote(event_id, safe='')}")
    if response.status_code != 200:
        raise Refused(response.status_code, _detail(response))
    record: dict[str, Any] = response.json()
    return record


def wait_for(client: httpx.Client, event_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        record = fetch(client, event_id)
        if record["status"] in TERMINAL or time.monotonic() > deadline:
            return record
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def stream(client: httpx.Client, event_id: str) -> Iterator[dict[str, Any]]:
    """The event's Server-Sent Events as dicts; ends after the terminal status."""
    url = f"/events/{quote(event_id, safe='')}/stream"
    # The server sends a keep-alive comment every 15 s, so a long read timeout is enough.
    timeout = httpx.Timeout(30.0, read=60.0)
    with client.stream("GET", url, timeout=timeout) as response:
        if response.status_code != 200:
            response.read()
            raise Refused(response.status_code, _detail(response))
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # a comment (keep-alive)
            if line:
                name, _, value = line.partition(":")
                if name == "data":
                    data.append(value.removeprefix(" "))
                continue
            if data:  # a blank line ends one event
                yield json.loads("\n".join(data))
                data = []


# --------------------------------------------------------------------------- output


class Printer:
    """Human-readable lines, or one JSON document per line with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, text: str, document: dict[str, Any]) -> None:
        print(json.dumps(document) if self.as_json else text, flush=True)

    def accepted(self, body: dict[str, Any]) -> None:
        text = f"202 accepted: event {body['event_id']} is {body['status']}"
        self.emit(text, {"status_code": 202, "body": body})

    def refused(self, refused: Refused) -> None:
        text = f"{refused.status_code} refused: {refused.detail}"
        self.emit(text, {"status_code": refused.status_code, "detail": refused.detail})

    def live(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "segment":
            seg = message["segment"]
            text = f"  [{_clock(seg['start'])} -> {_clock(seg['end'])}] {seg['text'].strip()}"
        elif kind == "status" and message.get("status") not in TERMINAL:
            text = f"  {message['status']}"
            if message.get("queue_position"):
                text += f" ({message['queue_position']} ahead)"
        elif kind == "matches":
            text = f"  {len(message['matches'])} matches"
        else:
            text = ""  # the transcript repeats the segments; the outcome is shown by record()
        if self.as_json:
            self.emit("", message)
        elif text:
            print(text, flush=True)

    def record(self, record: dict[str, Any]) -> None:
        if self.as_json:
            self.emit("", record)
            return
        print(f"event {record['event_id']}: {record['status']} (attempts {record['attempts']})")
        if record.get("error"):
            print(f"  error {record['error']['code']}: {record['error']['message']}")
        result = record.get("result") or {}
        transcript = result.get("transcript")
        if transcript:
            print(
                f"  transcript ({transcript['language']}, {transcript['duration_s']:.1f} s): "
                f"{transcript['text']}"
            )
        for rank, match in enumerate(result.get("matches", []), start=1):
            print(f"  {rank}. [{match['score']:.3f}] {match['title']}  ({match['id']})")
            print(f"     {match['text'][:160]}")
        for key in ("document_id", "chunks"):
            if key in result:
                print(f"  {key}: {result[key]}")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


# --------------------------------------------------------------------------- commands


def run_one(client: httpx.Client, submission: Submission, args: argparse.Namespace) -> int:
    out = Printer(args.json)
    try:
        body = send(client, submission)
    except Refused as refused:
        out.refused(refused)
        return 1
    out.accepted(body)
    if not (args.wait or args.stream or args.format):
        return 0
    record: dict[str, Any] | None = None
    if args.stream:
        for message in stream(client, submission.event_id):
            out.live(message)
            if message.get("type") == "status" and message.get("status") in TERMINAL:
                record = message
    if record is None:  # --wait, or the stream ended early (e.g. the server restarted)
        record = wait_for(client, submission.event_id, args.timeout)
    else:
        record = {k: v for k, v in record.items() if k != "type"}
    out.record(record)
    if args.format and record["status"] == "completed":
        url = f"/events/{quote(submission.event_id, safe='')}/transcript"
        text = client.get(url, params={"format": args.format})
        print(text.raise_for_status().text)
    return 0 if record["status"] == "completed" else 1


@dataclass
class BatchItem:
    line: int
    submission: Submission | None
    refused: str | None = None
    status: str = "unsent"
    error: str | None = None


def run_batch(client: httpx.Client, path: Path, args: argparse.Namespace) -> int:
    items = _read_batch(path, k=args.k)
    started = time.monotonic()
    bar_file = sys.stderr
    with ThreadPoolExecutor(args.concurrency) as pool:
        with tqdm(total=len(items), desc="sending", unit="event", file=bar_file) as bar:
            for _ in pool.map(lambda item: _send_item(client, item), items):
                bar.update()
        sent_s = time.monotonic() - started
        accepted = [item for item in items if item.status == "accepted"]
        if not args.no_wait and accepted:
            _finish_all(client, pool, accepted, timeout_s=args.timeout)
    return _summary(items, sent_s=sent_s, total_s=time.monotonic() - started, as_json=args.json)


def _read_batch(path: Path, *, k: int) -> list[BatchItem]:
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            items.append(BatchItem(number, batch_submission(line, base=path.parent, k=k)))
        except (ValueError, OSError) as exc:
            items.append(BatchItem(number, None, refused=f"line {number}: {exc}"))
    return items


def _send_item(client: httpx.Client, item: BatchItem) -> None:
    if item.submission is None:
        item.status = "refused"
        return
    try:
        send(client, item.submission)
        item.status = "accepted"
    except Refused as refused:
        item.status, item.refused = "refused", f"line {item.line}: {refused}"
    except (httpx.HTTPError, OSError) as exc:
        item.status, item.refused = "refused", f"line {item.line}: {type(exc).__name__}: {exc}"


def _finish_all(
    client: httpx.Client, pool: ThreadPoolExecutor, items: list[BatchItem], *, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    open_items = list(items)
    with tqdm(total=len(items), desc="finishing", unit="event", file=sys.stderr) as bar:
        while open_items and time.monotonic() < deadline:
            records = list(pool.map(lambda i: _poll(client, i), open_items))
            still = []
            for item, record in zip(open_items, records, strict=True):
                if record is not None and record["status"] in TERMINAL:
                    item.status = record["status"]
                    if record.get("error"):
                        item.error = f"{record['error']['code']}: {record['error']['message']}"
                    bar.update()
                else:
                    still.append(item)
            open_items = still
            if open_items:
                time.sleep(0.5)
    for item in open_items:
        item.status, item.error = "unfinished", f"not finished after {timeout_s:g} s"


def _poll(client: httpx.Client, item: BatchItem) -> dict[str, Any] | None:
    assert item.submission is not None
    try:
        return fetch(client, item.submission.event_id)
    except (Refused, httpx.HTTPError):
        return None  # a blip; the next round asks again


def _summary(items: list[BatchItem], *, sent_s: float, total_s: float, as_json: bool) -> int:
    counts = Counter(item.status for item in items)
    ok = counts["refused"] == 0 and counts["failed"] == 0 and counts["unfinished"] == 0
    problems = [
        {
            "line": item.line,
            "event_id": item.submission.event_id if item.submission else None,
            "status": item.status,
            "detail": item.refused or item.error,
        }
        for item in items
        if item.status in ("refused", "failed", "unfinished")
    ]
    if as_json:
        summary = {"events": len(items), **counts, "seconds": round(total_s, 2)}
        print(json.dumps({"summary": summary, "problems": problems}))
        return 0 if ok else 1
    rate = len(items) / total_s if total_s else 0.0
    print(
        f"sent {len(items)} events in {sent_s:.1f} s: "
        f"{len(items) - counts['refused']} accepted, {counts['refused']} refused"
    )
    if counts["completed"] or counts["failed"] or counts["unfinished"]:
        outcomes = f"{counts['completed']} completed, {counts['failed']} failed"
        if counts["unfinished"]:
            outcomes += f", {counts['unfinished']} unfinished"
        print(f"finished in {total_s:.1f} s ({rate:.1f} events/s): {outcomes}")
    for problem in problems:
        print(f"  {problem['status']}: {problem['event_id'] or '-'} {problem['detail']}")
    return 0 if ok else 1


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", help="send a query event with this text")
    source.add_argument("--audio", type=Path, help="send a speech event with this audio file")
    source.add_argument("--document", type=Path, help="add a document to the knowledge base")
    source.add_argument("--batch", type=Path, help="send every event of a JSON-lines file")
    parser.add_argument("--language", help="language of the audio (ISO code, e.g. de)")
    parser.add_argument("--title", help="title of the --document (default: the file name)")
    parser.add_argument("--event-id", help="event id (default: a random UUID)")
    parser.add_argument("-k", type=int, default=5, help="number of matches")
    follow = parser.add_mutually_exclusive_group()
    follow.add_argument("--wait", action="store_true", help="poll until the event finishes")
    follow.add_argument("--stream", action="store_true", help="follow the event live (SSE)")
    parser.add_argument("--format", choices=["txt", "srt", "vtt"], help="print the transcript")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel requests (--batch)")
    parser.add_argument("--no-wait", action="store_true", help="--batch: only send")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)
    if args.format and args.audio is None:
        parser.error("--format needs --audio")
    return args


def build_submission(args: argparse.Namespace) -> Submission:
    if args.audio is not None:
        return audio_submission(
            args.audio, k=args.k, language=args.language, event_id=args.event_id
        )
    if args.document is not None:
        return document_submission(args.document, title=args.title, event_id=args.event_id)
    text = args.text if args.text is not None else "How many bags can I check in for free?"
    return query_submission(text, k=args.k, event_id=args.event_id)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url, token = client_config(args.env_file)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
            if args.batch is not None:
                return run_batch(client, args.batch, args)
            return run_one(client, build_submission(args), args)
    except Refused as refused:  # e.g. the stream was refused after the event was accepted
        print(f"{refused.status_code} refused: {refused.detail}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as exc:
        print(f"error: cannot talk to {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an unreadable --document JSON
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
