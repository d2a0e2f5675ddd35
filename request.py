"""SkyHigh client: send an event, optionally wait for its result.

    python request.py --text "How many bags can I check in for free?" --wait
    python request.py --audio question.wav --wait
    python request.py --audio question.wav --format srt

Reads SKYHIGH_URL (default http://127.0.0.1:8000) and API_TOKEN from the environment or
.env (falling back to the first of API_TOKENS there).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values

TERMINAL = {"completed", "failed"}


def client_config(env_file: Path) -> tuple[str, str | None]:
    # The client is a script outside the service: it reads its two values directly.
    dotenv = {k: v for k, v in dotenv_values(env_file).items() if v} if env_file.exists() else {}
    url = os.environ.get("SKYHIGH_URL") or dotenv.get("SKYHIGH_URL") or "http://127.0.0.1:8000"
    token = os.environ.get("API_TOKEN") or dotenv.get("API_TOKEN")
    if not token:
        tokens = os.environ.get("API_TOKENS") or dotenv.get("API_TOKENS") or ""
        token = next((t.strip() for t in tokens.split(",") if t.strip()), None)
    return url.rstrip("/"), token


def build_event(args: argparse.Namespace) -> dict[str, Any]:
    event_id = args.event_id or str(uuid.uuid4())
    if args.text is not None:
        data: dict[str, Any] = {"text": args.text, "k": args.k}
        return {"event_id": event_id, "event_type": "query", "event_data": data}
    if args.audio is not None:
        audio = base64.b64encode(Path(args.audio).read_bytes()).decode()
        data = {"audio_base64": audio, "k": args.k}
        if args.language:
            data["language"] = args.language
        return {"event_id": event_id, "event_type": "speech", "event_data": data}
    return {
        "event_id": event_id,
        "event_type": "query",
        "event_data": {"text": "How many bags can I check in for free?", "k": args.k},
    }


def wait_for(client: httpx.Client, status_url: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        record: dict[str, Any] = client.get(status_url).raise_for_status().json()
        if record["status"] in TERMINAL or time.monotonic() > deadline:
            return record
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)


def show(record: dict[str, Any]) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", help="send a query event with this text")
    source.add_argument("--audio", type=Path, help="send a speech event with this audio file")
    parser.add_argument("--language", help="language of the audio (ISO code)")
    parser.add_argument("--event-id", help="event id (default: a random UUID)")
    parser.add_argument("-k", type=int, default=5, help="number of matches")
    parser.add_argument("--wait", action="store_true", help="poll until the event finishes")
    parser.add_argument("--format", choices=["txt", "srt", "vtt"], help="print the transcript")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    parser.add_argument("--json", action="store_true", help="print raw JSON")
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)

    url, token = client_config(args.env_file)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    event = build_event(args)
    with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
        response = client.post("/events/", json=event)
        body = response.json()
        if args.json:
            print(json.dumps({"status_code": response.status_code, "body": body}, indent=2))
        else:
            print(f"{response.status_code} {json.dumps(body)}")
        if response.status_code != 202:
            return 1
        if not (args.wait or args.format):
            return 0
        record = wait_for(client, body["status_url"], args.timeout)
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            show(record)
        if args.format and record["status"] == "completed":
            text = client.get(f"{body['status_url']}/transcript", params={"format": args.format})
            print(text.raise_for_status().text)
        return 0 if record["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
