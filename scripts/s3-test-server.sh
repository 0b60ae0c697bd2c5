#!/usr/bin/env bash
# Makes sure an S3-compatible server for the tests runs on loopback, and
# prints the AGENTD_TEST_S3_* variables that turn the S3 tests on:
#
#     eval "$(scripts/s3-test-server.sh)"
#     go test ./store/s3/
#
# The server is versitygw (a Go S3 gateway) over its POSIX backend, which
# keeps the bucket as a directory tree under a scratch directory. It is
# built from the Go module proxy on first use (about 2 minutes on 2 cores)
# into ${AGENTD_TOOLS:-~/.cache/agentd-tools}, so it needs no network beyond
# that. Running the script again while the server is up only prints the
# variables. Diagnostics go to stderr; only export lines go to stdout.
#
# Settings (environment): AGENTD_TEST_S3_PORT (7070), AGENTD_TEST_S3_BUCKET
# (agentd-test), AGENTD_TOOLS, AGENTD_TEST_S3_DIR (where the data, log and
# pid file go; default ${TMPDIR:-/tmp}/agentd-s3-test-$port).
set -euo pipefail

version=v1.8.0
port="${AGENTD_TEST_S3_PORT:-7070}"
bucket="${AGENTD_TEST_S3_BUCKET:-agentd-test}"
tools="${AGENTD_TOOLS:-${HOME:-/root}/.cache/agentd-tools}"
state="${AGENTD_TEST_S3_DIR:-${TMPDIR:-/tmp}/agentd-s3-test-$port}"
# Fixed test keys: the server holds nothing but test data, on loopback.
access_key=agentd-test-access
secret_key=agentd-test-secret-0123456789
region=us-east-1
endpoint="http://127.0.0.1:$port"
bin="$tools/versitygw-$version/versitygw"

log() { echo "s3-test-server: $*" >&2; }
die() { log "$*"; exit 1; }

case "$port" in '' | *[!0-9]*) die "AGENTD_TEST_S3_PORT must be a port number, not '$port'" ;; esac
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
# curl signs S3 requests itself from 7.75 on.
curl --help all 2>/dev/null | grep -q -- --aws-sigv4 || die "curl is too old to sign S3 requests (needs 7.75+)"

# s3curl makes a request signed with the test keys and prints its HTTP status.
s3curl() {
  local method="$1" path="$2" how=(-X "$1")
  # -X HEAD would make curl wait for a body that never comes.
  [ "$method" = HEAD ] && how=(--head)
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "${how[@]}" \
    --aws-sigv4 "aws:amz:$region:s3" --user "$access_key:$secret_key" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$endpoint$path" || true
}

# answers reports whether something speaks HTTP on the port.
answers() {
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$endpoint/" || true)"
  [ -n "$code" ] && [ "$code" != 000 ]
}

install_versitygw() {
  [ -x "$bin" ] && return
  command -v go >/dev/null || die "go is needed to build versitygw"
  log "building versitygw $version into $(dirname "$bin") (once; about 2 minutes)"
  mkdir -p "$(dirname "$bin")"
  # Outside any module, with no inherited -mod flags (go install of
  # module@version refuses them) and no toolchain download.
  (cd / && GOFLAGS= GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$(dirname "$bin")" \
    go install "github.com/versity/versitygw/cmd/versitygw@$version") >&2 ||
    die "go install github.com/versity/versitygw/cmd/versitygw@$version failed"
}

start_versitygw() {
  mkdir -p "$state"
  rm -rf "$state/data"
  mkdir -p "$state/data"
  log "starting versitygw on $endpoint over $state/data (log: $state/versitygw.log)"
  # Detached, and with none of this script's descriptors, so that
  # eval "$(…)" does not wait for the server to exit. Keys go by
  # environment, not arguments, to stay out of ps.
  ROOT_ACCESS_KEY="$access_key" ROOT_SECRET_KEY="$secret_key" \
    setsid "$bin" --port "127.0.0.1:$port" --region "$region" --quiet \
    posix "$state/data" </dev/null >"$state/versitygw.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$state/versitygw.pid"
  # Bounded wait: 100 tries, 0.1 s apart.
  for _ in $(seq 1 100); do
    if answers; then return; fi
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$state/versitygw.log" >&2; die "versitygw exited"; }
    sleep 0.1
  done
  tail -n 20 "$state/versitygw.log" >&2
  die "versitygw did not answer on $endpoint within 10 s"
}

if answers; then
  server="$(curl -s -o /dev/null -D - --max-time 2 "$endpoint/" | tr -d '\r' | sed -n 's/^[Ss]erver: //p')"
  [ "$server" = VERSITYGW ] || die "port $port is taken by something else (Server: ${server:-none}); set AGENTD_TEST_S3_PORT"
  log "versitygw already answers on $endpoint"
else
  install_versitygw
  start_versitygw
fi

# The bucket: 200 when made now, 409 when it is there already.
code="$(s3curl PUT "/$bucket")"
case "$code" in
  200 | 409) ;;
  403) die "the server on $endpoint refuses the test keys (HTTP 403): it was not started by this script; stop it or set AGENTD_TEST_S3_PORT" ;;
  *) die "creating bucket $bucket on $endpoint failed with HTTP $code" ;;
esac
code="$(s3curl HEAD "/$bucket")"
[ "$code" = 200 ] || die "bucket $bucket on $endpoint is not usable with the test keys (HTTP $code)"

cat <<EOF
export AGENTD_TEST_S3_ENDPOINT='$endpoint'
export AGENTD_TEST_S3_BUCKET='$bucket'
export AGENTD_TEST_S3_ACCESS_KEY='$access_key'
export AGENTD_TEST_S3_SECRET_KEY='$secret_key'
export AGENTD_TEST_S3_REGION='$region'
export AGENTD_TEST_S3_SERVER='versitygw-posix'
EOF
