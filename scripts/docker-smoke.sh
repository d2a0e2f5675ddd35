#!/usr/bin/env bash
# End-to-end smoke test of the Docker image (not part of CI: a cold run takes 10+ minutes).
#
#   bash scripts/docker-smoke.sh [--target default|slim] [--clean-image] [--skip-rebuild] [--skip-compose]
#
# Builds a target of the real Dockerfile (default: skyhigh:latest; slim: skyhigh:slim, the image
# without torch, which is also checked for that) and times a code-only rebuild, runs it with a
# generated token, sends a speech event (tests/data/jfk.wav), a query event and a document event
# with request.py, checks /docs, restarts the container and checks that the events and the
# document survived in the /data volume and that the HEALTHCHECK turns healthy, then checks that
# an event survives `docker-compose down` / `up -d` (with the target's image). Prints image size,
# build times, cold start and memory, then removes the containers and volumes it created (the
# image too with --clean-image).
#
# Works without Docker Hub: when python:3.12-slim cannot be pulled it uses a local image of that
# tag, building one with make-python-base-image (../shared/tools or $SKYHIGH_SHARED/tools) if
# needed. Containers use --network=host (engines started with --bridge=none have no default
# bridge), so the service listens on $SKYHIGH_SMOKE_PORT (default 18000) via UVICORN_PORT.
#
# Environment: SKYHIGH_SMOKE_PORT (18000), SKYHIGH_SMOKE_COMPOSE_PORT (18001),
# SKYHIGH_SMOKE_HOST_CA (auto|1|0: add this host's CA bundle to the build's base image, needed
# behind a TLS-intercepting proxy; auto = when /usr/local/share/ca-certificates has certificates),
# PYTHON (the client's interpreter; default .venv/bin/python).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

TARGET=default
BASE_IMAGE=python:3.12-slim
PORT=${SKYHIGH_SMOKE_PORT:-18000}
COMPOSE_PORT=${SKYHIGH_SMOKE_COMPOSE_PORT:-18001}
HOST_CA=${SKYHIGH_SMOKE_HOST_CA:-auto}
PYTHON=${PYTHON:-$repo/.venv/bin/python}
CLEAN_IMAGE=0
DO_REBUILD=1
DO_COMPOSE=1
while (($#)); do
    arg=$1
    shift
    case $arg in
        --target) TARGET=${1:-}; shift || true ;;
        --target=*) TARGET=${arg#--target=} ;;
        --clean-image) CLEAN_IMAGE=1 ;;
        --skip-rebuild) DO_REBUILD=0 ;;
        --skip-compose) DO_COMPOSE=0 ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $arg" >&2; exit 2 ;;
    esac
done
case $TARGET in
    default) IMAGE=skyhigh:latest ;;
    slim) IMAGE=skyhigh:slim ;;
    *) echo "unknown target $TARGET: use default or slim" >&2; exit 2 ;;
esac

# The classic builder: the Dockerfile must build without BuildKit, so test exactly that.
export DOCKER_BUILDKIT=0
run_id=$$
CONTAINER=skyhigh-smoke-$run_id
VOLUME=skyhigh-smoke-data-$run_id
COMPOSE_PROJECT=skyhighsmoke$run_id
COMPOSE_VOLUME=skyhigh-smoke-compose-$run_id
SMOKE_BASE=skyhigh-smoke-base:py3.12
work=$(mktemp -d /tmp/skyhigh-smoke.XXXX)
env_file=$work/env
compose_started=0
COMPOSE_FILES=()
declare -A RESULT=()
ORDER=()

log() { printf '\n=== %s\n' "$*"; }
record() { # record NAME pass|fail [detail]
    ORDER+=("$1")
    RESULT[$1]="$2${3:+ ($3)}"
    printf -- '--- %s: %s\n' "$1" "${RESULT[$1]}"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

compose() {
    # Compose v1 (Debian's docker-compose) first: it is what this script is meant to prove; v2
    # reads the same file.
    local -a cmd
    if command -v docker-compose >/dev/null; then cmd=(docker-compose); else cmd=(docker compose); fi
    SKYHIGH_PORT=$COMPOSE_PORT SKYHIGH_VOLUME=$COMPOSE_VOLUME \
        "${cmd[@]}" -p "$COMPOSE_PROJECT" --project-directory "$work/compose" \
        -f "$work/compose/docker-compose.yml" "${COMPOSE_FILES[@]}" "$@"
}

cleanup() {
    local rc=$?
    set +e
    log "cleanup"
    docker rm -f "$CONTAINER" >/dev/null 2>&1
    docker volume rm "$VOLUME" >/dev/null 2>&1
    if [[ $compose_started == 1 ]]; then
        compose down -v --remove-orphans >/dev/null 2>&1
    fi
    docker volume rm "$COMPOSE_VOLUME" >/dev/null 2>&1
    docker image rm skyhigh:smoke-rebuild >/dev/null 2>&1
    if [[ $CLEAN_IMAGE == 1 && -n ${IMAGE:-} ]]; then
        docker image rm "$IMAGE" "$SMOKE_BASE" >/dev/null 2>&1
    fi
    rm -rf "$work"
    echo "removed container $CONTAINER, volumes $VOLUME $COMPOSE_VOLUME$([[ $CLEAN_IMAGE == 1 ]] && echo ", image $IMAGE")"
    exit "$rc"
}
trap cleanup EXIT

http_code() { # http_code URL -> status code, 000 when nothing answers
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null || true
}

wait_ready() { # wait_ready URL TIMEOUT_S [CONTAINER] -> 0 when /ready answered 200
    local url=$1 deadline=$(($(date +%s) + $2)) container=${3:-}
    while (($(date +%s) < deadline)); do
        [[ $(http_code "$url/ready") == 200 ]] && return 0
        if [[ -n $container && $(docker inspect -f '{{.State.Running}}' "$container" 2>/dev/null) != true ]]; then
            echo "container $container stopped:"; docker logs --tail 40 "$container" 2>&1
            return 1
        fi
        sleep 0.5
    done
    return 1
}

event_status() { # event_status BASE_URL EVENT_ID -> status field or HTTP error
    curl -s --max-time 10 -H "Authorization: Bearer $TOKEN" "$1/events/$2" |
        "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("status", "?"))' 2>/dev/null ||
        echo "unreadable"
}

send_event() { # send_event NAME BASE_URL EVENT_ID request.py-args... ; logs to $work/NAME.log
    local name=$1 url=$2 id=$3
    shift 3
    SKYHIGH_URL=$url API_TOKEN=$TOKEN "$PYTHON" "$repo/request.py" --env-file /dev/null \
        --event-id "$id" --wait --timeout 300 "$@" >"$work/$name.log" 2>&1
}

# --------------------------------------------------------------------------- prerequisites
command -v docker >/dev/null || { echo "docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the docker engine is not running" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed on the host" >&2; exit 1; }
[[ -x $PYTHON ]] || { echo "no client interpreter at $PYTHON (run uv sync, or set PYTHON)" >&2; exit 1; }

# --------------------------------------------------------------------------- base image
log "base image $BASE_IMAGE"
if timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "pulled $BASE_IMAGE"
elif docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "cannot pull $BASE_IMAGE; using the local image of that tag"
else
    tool=""
    for dir in "${SKYHIGH_SHARED:-}/tools" "$repo/../shared/tools"; do
        [[ -x $dir/make-python-base-image || -f $dir/make-python-base-image ]] &&
            { tool=$dir/make-python-base-image; break; }
    done
    [[ -n $tool ]] || { echo "cannot pull $BASE_IMAGE and no make-python-base-image found" >&2; exit 1; }
    echo "cannot pull $BASE_IMAGE; building a local stand-in with $tool"
    bash "$tool" "$BASE_IMAGE"
fi

# Behind a TLS-intercepting proxy, uv inside the build must trust the proxy's CA. Rather than
# touch the Dockerfile, the build gets a base image with this host's CA bundle added (through the
# Dockerfile's PYTHON_IMAGE argument).
build_base=$BASE_IMAGE
if [[ $HOST_CA == 1 || ($HOST_CA == auto && -n $(ls /usr/local/share/ca-certificates/ 2>/dev/null)) ]]; then
    mkdir -p "$work/ca"
    cp /etc/ssl/certs/ca-certificates.crt "$work/ca/host-ca.crt"
    printf '%s\n' "FROM $BASE_IMAGE" "COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt" \
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" >"$work/ca/Dockerfile"
    docker build -q -t "$SMOKE_BASE" "$work/ca" >/dev/null 2>"$work/ca/build.err" ||
        { cat "$work/ca/build.err" >&2; exit 1; }
    build_base=$SMOKE_BASE
    echo "this host has extra CA certificates: building on $SMOKE_BASE ($BASE_IMAGE + host CA bundle)"
fi

# --------------------------------------------------------------------------- build
log "docker build --target $TARGET -t $IMAGE . (PYTHON_IMAGE=$build_base)"
t0=$(now)
if docker build --network=host --build-arg "PYTHON_IMAGE=$build_base" --target "$TARGET" -t "$IMAGE" . >"$work/build.log" 2>&1; then
    build_s=$(elapsed "$t0" "$(now)")
    record build pass "${build_s} s"
else
    tail -40 "$work/build.log"
    record build fail
    exit 1
fi
image_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
image_size=$(awk -v b="$image_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }')

rebuild_s=skipped
if [[ $DO_REBUILD == 1 ]]; then
    # A code-only change, made in a copy of the checkout so the checkout is never edited (the
    # big ignored folders stay behind; .dockerignore filters the rest as usual).
    log "rebuild after a code-only change"
    mkdir -p "$work/ctx"
    tar -C "$repo" --exclude=./.venv --exclude=./.git --exclude=./.mypy_cache --exclude=./spool \
        --exclude=./bench/cache --exclude=./bench/out -cf - . | tar -C "$work/ctx" -xf -
    echo "# smoke rebuild $run_id" >>"$work/ctx/main.py"
    t0=$(now)
    if docker build --network=host --build-arg "PYTHON_IMAGE=$build_base" --target "$TARGET" -t skyhigh:smoke-rebuild "$work/ctx" >"$work/rebuild.log" 2>&1; then
        rebuild_s=$(elapsed "$t0" "$(now)")
        # The classic builder prints "---> Using cache" under each step it did not run.
        if grep -A1 -E "RUN (uv (sync|export)|python -c)" "$work/rebuild.log" | grep -q -- "Running in"; then
            record rebuild-code-only fail \
                "${rebuild_s} s, dependency or model layer rebuilt: was pyproject.toml, uv.lock or models.py edited during the run?"
        else
            record rebuild-code-only pass "${rebuild_s} s, dependency and model layers cached"
        fi
    else
        tail -20 "$work/rebuild.log"
        record rebuild-code-only fail
    fi
    docker image rm skyhigh:smoke-rebuild >/dev/null 2>&1 || true
    rm -rf "$work/ctx"
fi

# --------------------------------------------------------------------------- run
TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')
printf '%s\n' "API_TOKENS=$TOKEN" "UVICORN_PORT=$PORT" "LOG_LEVEL=INFO" >"$env_file"
URL=http://127.0.0.1:$PORT
[[ $(http_code "$URL/health") == 000 ]] || { echo "port $PORT is already in use (set SKYHIGH_SMOKE_PORT)" >&2; exit 1; }

log "docker run ($CONTAINER, volume $VOLUME, port $PORT)"
t0=$(now)
docker run -d --name "$CONTAINER" --network=host --env-file "$env_file" -v "$VOLUME:/data" "$IMAGE" >/dev/null
if wait_ready "$URL" 300 "$CONTAINER"; then
    cold_s=$(elapsed "$t0" "$(now)")
    record cold-start pass "${cold_s} s to /ready 200"
else
    cold_s=n/a
    record cold-start fail
    docker logs --tail 60 "$CONTAINER"
    exit 1
fi
docker exec "$CONTAINER" id -un | grep -qx skyhigh && record non-root-user pass "skyhigh" ||
    record non-root-user fail "$(docker exec "$CONTAINER" id -un)"
if [[ $TARGET == slim ]]; then
    # The slim image's promise: no torch, CUDA libraries or openai-whisper installed at all.
    found=$(docker exec "$CONTAINER" python -c 'import importlib.util as u; print(" ".join(m for m in ("torch", "whisper", "sentence_transformers", "triton", "nvidia") if u.find_spec(m)))')
    [[ -z $found ]] && record no-torch pass "torch, whisper, sentence_transformers, triton, nvidia absent" ||
        record no-torch fail "installed: $found"
fi

[[ $(http_code "$URL/docs") == 200 ]] && record docs pass "/docs 200" || record docs fail "/docs $(http_code "$URL/docs")"
status_json=$(curl -s "$URL/status" || true)
echo "status: $status_json"

log "speech event (tests/data/jfk.wav)"
SPEECH_ID=$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')
t0=$(now)
if send_event speech "$URL" "$SPEECH_ID" --audio "$repo/tests/data/jfk.wav"; then
    record speech-event pass "$(elapsed "$t0" "$(now)") s incl. first transcription"
else
    record speech-event fail "see below"
fi
cat "$work/speech.log"

mem=$(docker stats --no-stream --format '{{.MemUsage}}' "$CONTAINER" | cut -d/ -f1 | xargs)
echo "memory after one transcription: $mem"

log "query event"
QUERY_ID=$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')
if send_event query "$URL" "$QUERY_ID" --text "How many bags can I check in for free?" -k 3; then
    record query-event pass
else
    record query-event fail "see below"
fi
cat "$work/query.log"

log "document event (the knowledge base in /data is writable)"
DOC_TITLE="Docker smoke $run_id"
echo "The zebra lounge at gate Q$run_id serves free hot chocolate to passengers travelling with a pet tortoise." >"$work/doc.txt"
if send_event document "$URL" "$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')" \
    --document "$work/doc.txt" --title "$DOC_TITLE"; then
    record document-event pass
else
    record document-event fail "see below"
fi
cat "$work/document.log"

log "docker restart: events and the document survive in the volume"
t0=$(now)
docker restart "$CONTAINER" >/dev/null
if wait_ready "$URL" 300 "$CONTAINER"; then
    restart_s=$(elapsed "$t0" "$(now)")
    echo "restart -> /ready 200 in $restart_s s"
    s1=$(event_status "$URL" "$SPEECH_ID")
    s2=$(event_status "$URL" "$QUERY_ID")
    if [[ $s1 == completed && $s2 == completed ]]; then
        record restart-persistence pass "speech $s1, query $s2"
    else
        record restart-persistence fail "speech $s1, query $s2"
    fi
    send_event doc-query "$URL" "$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')" \
        --text "Where can passengers with a pet tortoise get free hot chocolate?" -k 1 || true
    grep -q "$DOC_TITLE" "$work/doc-query.log" && record knowledge-persistence pass "document found after restart" ||
        { cat "$work/doc-query.log"; record knowledge-persistence fail "document not found after restart"; }
else
    record restart-persistence fail "not ready after restart"
fi
# The image's HEALTHCHECK (first probe 30 s after start) must turn the container healthy.
deadline=$(($(date +%s) + 90))
while health=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER" 2>/dev/null) &&
    [[ $health == starting ]] && (($(date +%s) < deadline)); do
    sleep 2
done
[[ $health == healthy ]] && record healthcheck pass "docker reports healthy" ||
    record healthcheck fail "docker reports $health"
docker rm -f "$CONTAINER" >/dev/null

# --------------------------------------------------------------------------- compose
if [[ $DO_COMPOSE == 1 ]]; then
    log "compose: up -d / down / up -d (project $COMPOSE_PROJECT, port $COMPOSE_PORT)"
    # The compose file is run from a copy beside its own .env (made from .env.example, as a user
    # would), so the checkout's .env is never read or written.
    mkdir -p "$work/compose"
    cp "$repo/docker-compose.yml" "$work/compose/"
    if [[ $TARGET != default ]]; then
        # The compose file names skyhigh:latest; the run under test uses the image just built.
        printf '%s\n' 'version: "3.8"' 'services:' '  api:' "    image: $IMAGE" \
            >"$work/compose/docker-compose.target.yml"
        COMPOSE_FILES+=(-f "$work/compose/docker-compose.target.yml")
    fi
    sed "s|^API_TOKENS=.*|API_TOKENS=$TOKEN|" "$repo/.env.example" >"$work/compose/.env"
    CURL_URL=http://127.0.0.1:$COMPOSE_PORT
    compose_started=1
    if compose up -d >"$work/compose.log" 2>&1 && wait_ready "$CURL_URL" 300; then
        record compose-up pass
        COMPOSE_ID=$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')
        send_event compose-query "$CURL_URL" "$COMPOSE_ID" --text "Can I bring my pet on board?" -k 1 ||
            true
        compose down >>"$work/compose.log" 2>&1
        if compose up -d >>"$work/compose.log" 2>&1 && wait_ready "$CURL_URL" 300; then
            s=$(event_status "$CURL_URL" "$COMPOSE_ID")
            [[ $s == completed ]] && record compose-down-up-persistence pass "event $s after down/up" ||
                record compose-down-up-persistence fail "event $s after down/up"
        else
            cat "$work/compose.log"
            record compose-down-up-persistence fail "not ready after down/up"
        fi
    else
        cat "$work/compose.log"
        compose logs --tail 40 || true
        record compose-up fail
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    compose_started=0
fi

# --------------------------------------------------------------------------- summary
log "summary"
printf '%-28s %s\n' "image" "$IMAGE ($image_size)" "base" "$build_base" \
    "build" "${build_s} s" "rebuild (code change)" "$rebuild_s$([[ $rebuild_s != skipped ]] && echo " s")" \
    "cold start" "$cold_s s (container start -> /ready 200)" \
    "restart" "${restart_s:-n/a} s (docker restart -> /ready 200)" \
    "memory after transcription" "$mem"
failed=0
for name in "${ORDER[@]}"; do
    printf '%-28s %s\n' "$name" "${RESULT[$name]}"
    [[ ${RESULT[$name]} == pass* ]] || failed=1
done
((failed == 0)) && echo "ALL CHECKS PASSED" || echo "SOME CHECKS FAILED"
exit "$failed"
