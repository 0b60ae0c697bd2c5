#!/usr/bin/env bash
# Makes sure the engines the integration tests use are running on loopback —
# PostgreSQL, Redis, and an S3-compatible server (versitygw) — starting any
# that is down, and prints the AGENTD_TEST_* variables that turn the
# integration tests on. Use it as:
#
#     eval "$(scripts/test-services.sh)"
#     go test ./...
#
# Diagnostics go to stderr; only export lines go to stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log() { echo "test-services: $*" >&2; }

pg_host=127.0.0.1 pg_port=5432
if ! pg_isready -q -h "$pg_host" -p "$pg_port" 2>/dev/null; then
  log "PostgreSQL is down; starting it"
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
  if [ -z "$version" ]; then log "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || pg_ctlcluster "$version" main start >&2
  for _ in $(seq 1 60); do pg_isready -q -h "$pg_host" -p "$pg_port" && break; sleep 0.5; done
  pg_isready -q -h "$pg_host" -p "$pg_port" || { log "PostgreSQL did not come up"; exit 1; }
fi
echo "export AGENTD_TEST_POSTGRES_URL='postgres://postgres@$pg_host:$pg_port/test?sslmode=disable'"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "Redis is down; starting it"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
  for _ in $(seq 1 60); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { log "Redis did not come up"; exit 1; }
fi
echo "export AGENTD_TEST_REDIS_URL='redis://127.0.0.1:6379/0'"

"$here/s3-test-server.sh"
