#!/bin/bash
# Fleet smoke: the compose `scale` profile for real. Brings up Redis, Postgres, the API-only
# server, two event workers and the knowledge writer; submits a mix of events (speech uploads,
# queries, a document); `docker kill`s the worker that is transcribing one of them; waits; checks
# that every event completed and that the killed worker's event shows attempts >= 2. Then it
# crashes the other worker (SIGKILL to its process from the host; Docker treats `docker kill` as
# a manual stop, which no restart policy undoes) and checks that `restart: always` brings it
# back. Prints a summary and removes what it made.
#
#   bash scripts/fleet-smoke.sh                # needs skyhigh:latest (docker build -t skyhigh .)
#   bash scripts/fleet-smoke.sh --build        # builds skyhigh:latest first
#   bash scripts/fleet-smoke.sh --keep         # leave the fleet running for a look afterwards
#
# Without a reachable Docker engine it prints "skipped: docker not available" and exits 0, so CI
# may call it unconditionally. Redis and Postgres come from REDIS_IMAGE / POSTGRES_IMAGE (defaults
# redis:7, postgres:16); when neither is present nor pullable it builds the Debian stand-ins with
# scripts/make-service-images.sh. Compose v2 (`docker compose`) when present, else v1
# (`docker-compose --compatibility`, which v1 needs for the two worker replicas).
# Runs in its own project (skyhigh-fleet-smoke) with its own volumes and a generated .env in a
# temporary directory: it never reads or changes your .env or the skyhigh-data volume.
# Environment: IMAGE (skyhigh:latest), SKYHIGH_FLEET_PORT (18002), SPEECH_EVENTS (4),
# FLEET_TIMEOUT_S (900: the whole wait for completion). Needs curl and python3 (JSON parsing).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

IMAGE=${IMAGE:-skyhigh:latest}
PORT=${SKYHIGH_FLEET_PORT:-18002}
SPEECH_EVENTS=${SPEECH_EVENTS:-4}
TIMEOUT_S=${FLEET_TIMEOUT_S:-900}
PROJECT=skyhigh-fleet-smoke
BUILD=0
KEEP=0
for arg in "$@"; do
    case $arg in
        --build) BUILD=1 ;;
        --keep) KEEP=1 ;;
        *) echo "unknown option $arg (--build, --keep)" >&2; exit 2 ;;
    esac
done

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "skipped: docker not available (no docker CLI or no running engine)"
    exit 0
fi
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "fleet-smoke needs $tool" >&2; exit 1; }
done
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose --compatibility)
else
    echo "skipped: docker is here but neither 'docker compose' nor docker-compose is"
    exit 0
fi

log() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
secret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

# --------------------------------------------------------------------------- images
if ((BUILD)); then
    log "docker build -t $IMAGE ."
    docker build -t "$IMAGE" "$repo"
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 ||
    fail "no image $IMAGE: build it first (docker build -t $IMAGE .) or pass --build"
REDIS_IMAGE=${REDIS_IMAGE:-redis:7}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:16}
have() { docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1; }
if ! have "$REDIS_IMAGE" || ! have "$POSTGRES_IMAGE"; then
    log "$REDIS_IMAGE / $POSTGRES_IMAGE unavailable: building Debian stand-ins"
    bash "$repo/scripts/make-service-images.sh"
    REDIS_IMAGE=skyhigh-redis:local
    POSTGRES_IMAGE=skyhigh-postgres:local
fi

# --------------------------------------------------------------------------- fleet
work=$(mktemp -d -t skyhigh-fleet.XXXX)
cp "$repo/docker-compose.yml" "$work/"
token=$(secret)
metrics_token=$(secret)
# Short leases and sweeps: the killed worker's event is taken over in seconds, not minutes.
cat >"$work/.env" <<ENV
API_TOKENS=$token
METRICS_TOKEN=$metrics_token
REDIS_PASSWORD=$(secret)
POSTGRES_PASSWORD=$(secret)
REDIS_IMAGE=$REDIS_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
SKYHIGH_SCALE_PORT=$PORT
SKYHIGH_VOLUME=$PROJECT-data
EVENT_LEASE_S=15
SWEEP_INTERVAL_S=2
WHISPER_MODEL=base
ENV
dc() { (cd "$work" && "${compose[@]}" -p "$PROJECT" --profile scale "$@"); }
cleanup() {
    local rc=$?
    if ((KEEP)); then
        echo "kept: cd $work && ${compose[*]} -p $PROJECT --profile scale down -v"
    else
        dc down -v --remove-orphans >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT

log "${compose[*]} --profile scale up -d api-scale worker knowledge-writer (images: $IMAGE, $REDIS_IMAGE, $POSTGRES_IMAGE)"
dc up -d --no-build api-scale worker knowledge-writer
url=http://127.0.0.1:$PORT
auth=(-H "Authorization: Bearer $token")
deadline=$((SECONDS + 300))
until curl -fsS -o /dev/null "$url/ready" 2>/dev/null; do
    ((SECONDS < deadline)) || { dc ps; dc logs --tail 50; fail "API not ready within 300 s"; }
    sleep 2
done
echo "API ready after ${SECONDS}s"
workers() { dc ps -q worker | sort; }
mapfile -t before < <(workers)
((${#before[@]} == 2)) || fail "expected 2 worker containers, got ${#before[@]}"

# --------------------------------------------------------------------------- events
run_id=$(date +%s)
ids=()
post_json() {
    curl -fsS -X POST "$url/events/" "${auth[@]}" -H "Content-Type: application/json" -d "$1" >/dev/null
}
for i in $(seq 1 "$SPEECH_EVENTS"); do
    id=fleet-$run_id-speech-$i
    curl -fsS -X POST "$url/events/upload" "${auth[@]}" -F "event_id=$id" \
        -F "file=@$repo/tests/data/sonnet1.flac" >/dev/null
    ids+=("$id")
done
id=fleet-$run_id-doc
post_json "{\"event_id\": \"$id\", \"event_type\": \"document\", \"event_data\": {\"document_id\": \"fleet-$run_id\", \"title\": \"Fleet smoke\", \"text\": \"Fleet smoke code FLEET$run_id: containers share one event store.\"}}"
ids+=("$id")
for i in 1 2; do
    id=fleet-$run_id-query-$i
    post_json "{\"event_id\": \"$id\", \"event_type\": \"query\", \"event_data\": {\"text\": \"How many bags can I check in for free?\", \"k\": 3}}"
    ids+=("$id")
done
echo "submitted ${#ids[@]} events: $SPEECH_EVENTS speech, 1 document, 2 queries"

# --------------------------------------------------------------------------- kill mid-transcription
# /status (with METRICS_TOKEN) lists each live worker's id (hostname:pid:nonce; the hostname is
# the container id) and the events it holds a lease on.
victim="" victim_event=""
deadline=$((SECONDS + 180))
while [[ -z $victim ]]; do
    ((SECONDS < deadline)) || fail "no worker reported a running speech event within 180 s"
    sleep 1
    found=$(curl -fsS "$url/status" -H "Authorization: Bearer $metrics_token" | python3 -c '
import json, sys
run = sys.argv[1]
for w in json.load(sys.stdin)["dispatcher"].get("live_workers", []):
    for key in map(str, w.get("running") or []):
        mark = f"fleet-{run}-speech-"
        if mark in key:  # a stored key: <owner digest><separator><event id>
            print(w["id"].split(":")[0], key[key.index(mark):])
            sys.exit(0)
' "$run_id" || true)
    [[ -n $found ]] && read -r victim victim_event <<<"$found"
done
for cid in "${before[@]}"; do [[ $cid == "$victim"* ]] && victim=$cid; done
[[ " ${before[*]} " == *" $victim "* ]] || fail "worker $victim is not one of this fleet's workers"
# The worker must still be mid-event when it dies: confirm the event has not finished yet.
status=$(curl -fsS "$url/events/$victim_event" "${auth[@]}" | json 'd["status"]')
[[ $status == processing || $status == running || $status == queued ]] ||
    fail "$victim_event was already $status before the kill; raise SPEECH_EVENTS or use longer audio"
log "docker kill ${victim:0:12} (running $victim_event, status $status)"
docker kill "$victim" >/dev/null

# --------------------------------------------------------------------------- recovery
deadline=$((SECONDS + TIMEOUT_S))
declare -A final=()
while :; do
    pending=0
    for id in "${ids[@]}"; do
        [[ ${final[$id]:-} == completed || ${final[$id]:-} == failed ]] && continue
        final[$id]=$(curl -fsS "$url/events/$id" "${auth[@]}" | json 'd["status"]')
        [[ ${final[$id]} == completed || ${final[$id]} == failed ]] || pending=$((pending + 1))
    done
    ((pending == 0)) && break
    ((SECONDS < deadline)) || break
    sleep 3
done

attempts=$(curl -fsS "$url/events/$victim_event" "${auth[@]}" | json 'd["attempts"]')

# --------------------------------------------------------------------------- a crash comes back
# Docker counts `docker kill` as a manual stop: no restart policy, `always` included, brings that
# container back (moby/moby#33306), so an operator starts it again. A crash is what the policy is
# for: SIGKILL to another worker's process from the host (what the OOM killer does) must see it
# restarted by `restart: always`.
docker start "$victim" >/dev/null
crashed=""
for cid in "${before[@]}"; do [[ $cid != "$victim" ]] && crashed=$cid && break; done
[[ -n $crashed ]] || fail "no second worker to crash"
pid=$(docker inspect -f '{{.State.Pid}}' "$crashed")
log "kill -9 $pid (the main process of worker ${crashed:0:12}, a crash)"
as_root kill -9 "$pid"
restarts=0 running=false
deadline=$((SECONDS + 120))
while ((SECONDS < deadline)); do
    sleep 2
    restarts=$(docker inspect -f '{{.RestartCount}}' "$crashed" 2>/dev/null || echo 0)
    running=$(docker inspect -f '{{.State.Running}}' "$crashed" 2>/dev/null || echo false)
    ((restarts >= 1)) && [[ $running == true ]] && break
done
victim_running=$(docker inspect -f '{{.State.Running}}' "$victim" 2>/dev/null || echo false)

# --------------------------------------------------------------------------- health and metrics
# Every service's healthcheck passes (the workers' after their restarts too), and each worker
# container serves its Prometheus metrics on WORKER_METRICS_PORT, counting what it completed.
log "waiting for every container's healthcheck"
deadline=$((SECONDS + 240))
while :; do
    unhealthy=()
    for cid in $(dc ps -q); do
        health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$cid")
        [[ $health == healthy ]] || unhealthy+=("$(docker inspect -f '{{.Name}}' "$cid")=$health")
    done
    ((${#unhealthy[@]} == 0)) && break
    ((SECONDS < deadline)) || fail "not healthy after 240 s: ${unhealthy[*]}"
    sleep 5
done
healthy=$(dc ps -q | wc -l)
for cid in "${before[@]}"; do
    count=$(docker exec "$cid" python -c '
import re, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9100/metrics", timeout=10).read().decode()
print(sum(float(v) for v in re.findall(r"^skyhigh_events_completed_total\{[^}]*\} (\S+)$", text, re.M)))
') || fail "worker ${cid:0:12} serves no metrics on :9100"
    echo "  worker ${cid:0:12} metrics: skyhigh_events_completed_total $count (since its last start)"
done
completed=0
for id in "${ids[@]}"; do [[ ${final[$id]} == completed ]] && completed=$((completed + 1)); done

log "summary"
for id in "${ids[@]}"; do printf '  %-40s %s\n' "$id" "${final[$id]}"; done
echo "  events completed: $completed/${#ids[@]}"
echo "  $victim_event attempts: $attempts"
echo "  docker-killed worker ${victim:0:12}: running again after docker start: $victim_running"
echo "  crashed worker ${crashed:0:12}: restarts $restarts, running $running"
echo "  healthchecks: all $healthy containers healthy"

((completed == ${#ids[@]})) || fail "not every event completed"
((attempts >= 2)) || fail "$victim_event shows attempts $attempts after its worker was killed (want >= 2)"
[[ $victim_running == true ]] || fail "the docker-killed worker did not start again"
((restarts >= 1)) && [[ $running == true ]] || fail "the crashed worker did not come back (restart: always)"
echo "PASS: fleet smoke (1 worker killed mid-event, ${#ids[@]}/${#ids[@]} events completed, attempts $attempts; 1 worker crashed and restarted)"
