#!/usr/bin/env bash
# One entry point for a fresh machine: installs what is missing, then serves or tests.
#   ./scripts/dev.sh serve   # set up, create .env with a fresh token if absent, run the API
#   ./scripts/dev.sh test    # set up, run the test suite (extra args go to pytest)
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
# Install-time bytecode (as in the Dockerfile): where PYTHONDONTWRITEBYTECODE is set, or the
# environment is read-only, every process would otherwise compile its imports again from source,
# about 2.7 s of each server or worker start (torch, whisper, numba).
export UV_COMPILE_BYTECODE=1

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; exit 1
  fi
}

ensure_apt_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} ..." >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_uv() {
  if ! command -v uv >/dev/null; then
    python3 -m pip install --quiet "uv==${UV_VERSION}" \
      || python3 -m pip install --quiet --user "uv==${UV_VERSION}"
    export PATH="$HOME/.local/bin:$PATH"
  fi
}

ensure_env_file() {
  if [ ! -f .env ]; then
    local token
    token="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    sed "s/^API_TOKENS=change-me$/API_TOKENS=${token}/" .env.example > .env
    echo "created .env with a new API token: ${token}" >&2
  fi
}

command="${1:-serve}"
shift || true
case "$command" in
  serve)
    ensure_apt_packages ffmpeg
    ensure_uv
    uv sync --locked --no-dev
    ensure_env_file
    exec uv run --no-dev uvicorn main:app --http skyhigh.api.http_server:HttpProtocol --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
    ;;
  test)
    # sox and espeak-ng make test audio; chromium drives the demo page test (tests/test_demo.py);
    # redis-server and postgresql are started as throwaway instances by the scale-out tests.
    ensure_apt_packages ffmpeg espeak-ng sox openssl chromium redis-server postgresql
    ensure_uv
    uv sync --locked
    exec uv run pytest "$@"
    ;;
  *)
    echo "usage: $0 serve|test [pytest args]" >&2
    exit 2
    ;;
esac
