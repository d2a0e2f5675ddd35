"""The seed's bare handler: prints the event and answers 202 (baseline for bench/intake_load.py)."""

from typing import Any

from fastapi import FastAPI, status
from pydantic import BaseModel

app = FastAPI()


class EventSchema(BaseModel):
    event_id: str
    event_type: str
    event_data: dict[str, Any]


@app.post("/events/", status_code=status.HTTP_202_ACCEPTED)
async def create_event(event: EventSchema) -> dict[str, str]:
    print(f"Received event: {event}")
    return {"message": "Data received!"}


@app.get("/health")  # not in the seed: lets the benchmark wait for startup the same way
async def health() -> dict[str, str]:
    return {"status": "ok"}
