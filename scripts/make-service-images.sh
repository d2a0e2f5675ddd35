#!/bin/bash
# Builds local stand-ins for the Redis and Postgres images that the compose `scale` profile uses,
# from Debian packages, for hosts that cannot reach Docker Hub (or any mirror):
#
#   bash scripts/make-service-images.sh                # tags skyhigh-redis:local, skyhigh-postgres:local
#   echo 'REDIS_IMAGE=skyhigh-redis:local' >> .env
#   echo 'POSTGRES_IMAGE=skyhigh-postgres:local' >> .env
#
# They behave like the official images where compose relies on it:
# - Redis: `redis-server` (a wrapper ahead of Debian's on PATH) listens on all addresses with
#   protected mode off (the compose network is the boundary, as in the official image) and takes
#   `--requirepass` from REDIS_PASSWORD when the command line gives none; `redis-cli` is there for
#   the healthcheck. Runs as the `redis` user in /data.
# - Postgres: on first start (empty PGDATA, default /var/lib/postgresql/data) initdb creates the
#   superuser POSTGRES_USER (default postgres) with POSTGRES_PASSWORD (required, as in the official
#   image) and the database POSTGRES_DB (default: the user's name); it listens on all addresses,
#   local socket connections are trusted (pg_isready, psql in the container) and TCP connections
#   need the password (scram-sha-256). Debian bookworm ships PostgreSQL 15, not 16: fine for a fresh
#   volume, but do not point it at a data directory made by postgres:16.
#
# Base image (BASE_IMAGE, or the first argument): the local python:3.12-slim when present (the
# stand-in that shared/tools/make-python-base-image builds from this machine's Debian mirror,
# so no registry is needed), else debian:bookworm-slim. Needs a running Docker engine; apt inside
# the build reaches the base image's Debian mirror.
# Environment: BASE_IMAGE, REDIS_TAG (skyhigh-redis:local), POSTGRES_TAG (skyhigh-postgres:local).
set -euo pipefail

base=${1:-${BASE_IMAGE:-}}
if [[ -z $base ]]; then
    if docker image inspect python:3.12-slim >/dev/null 2>&1; then
        base=python:3.12-slim
    else
        base=debian:bookworm-slim
    fi
fi
redis_tag=${REDIS_TAG:-skyhigh-redis:local}
postgres_tag=${POSTGRES_TAG:-skyhigh-postgres:local}

work=$(mktemp -d -t skyhigh-service-images.XXXX)
trap 'rm -rf "$work"' EXIT

# --------------------------------------------------------------------------- redis
mkdir -p "$work/redis"
cat >"$work/redis/redis-server" <<'SCRIPT'
#!/bin/sh
# Debian's redis-server with the official image's network defaults (see make-service-images.sh).
set -e
config=
case ${1:-} in
    ""|-*) ;;
    *) config=$1; shift ;;
esac
case " $* " in
    *" --requirepass "*) ;;
    *) if [ -n "${REDIS_PASSWORD:-}" ]; then set -- "$@" --requirepass "$REDIS_PASSWORD"; fi ;;
esac
exec /usr/bin/redis-server ${config:+"$config"} --protected-mode no --bind '* -::*' --dir /data "$@"
SCRIPT
cat >"$work/redis/Dockerfile" <<DOCKERFILE
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
COPY redis-server /usr/local/bin/redis-server
RUN chmod 0755 /usr/local/bin/redis-server
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /data
VOLUME ["/data"]
USER redis
EXPOSE 6379
CMD ["redis-server"]
DOCKERFILE

# --------------------------------------------------------------------------- postgres
mkdir -p "$work/postgres"
cat >"$work/postgres/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/bash
# First start: initdb with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, then run the server.
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    [[ -n ${POSTGRES_PASSWORD:-} ]] || { echo "set POSTGRES_PASSWORD" >&2; exit 1; }
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [[ $db != postgres ]]; then
        # initdb makes only `postgres`; the official image creates POSTGRES_DB (default: the
        # user's name) too. Single-user mode: no server, no network, before anyone can connect.
        printf 'CREATE DATABASE "%s" OWNER "%s";\n' "${db//\"/\"\"}" "${user//\"/\"\"}" |
            postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "initialised $PGDATA: user $user, database $db"
fi
if [[ ${1:-} == postgres ]]; then
    shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
SCRIPT
cat >"$work/postgres/Dockerfile" <<DOCKERFILE
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends postgresql \\
    && rm -rf /var/lib/apt/lists/* \\
    && ln -s "\$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)" /usr/lib/postgresql/bin \\
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \\
    && chmod 0700 /var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
DOCKERFILE

echo "building $redis_tag and $postgres_tag on $base"
docker build -q -t "$redis_tag" "$work/redis" >/dev/null
docker build -q -t "$postgres_tag" "$work/postgres" >/dev/null
echo "built $redis_tag and $postgres_tag; use them with:"
echo "  REDIS_IMAGE=$redis_tag POSTGRES_IMAGE=$postgres_tag  (in .env or the environment)"
