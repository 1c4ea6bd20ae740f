#!/usr/bin/env bash
# Runs deploy/Dockerfile's stages without Docker, on a clean export of the
# committed tree (what the build context holds): npm ci and the dashboard's
# build, the static Go build with the image's flags, then the binary as an
# unprivileged user (uid 65532, as in the image) with the image's config
# file, probed on /healthz and /readyz. Needs git, node, npm, go and, as
# root, setpriv (util-linux) to drop privileges.
#
#   deploy/docker-build-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
git archive HEAD | tar -x -C "$tmp/"
src=$tmp

echo "== stage ui: npm ci && npm run build"
(cd "$src/web/ui" && npm ci --no-audit --no-fund --loglevel=error && npm run build >/dev/null)
test -f "$src/web/ui/dist/app/index.html"

echo "== stage build: CGO_ENABLED=0 go build -trimpath -ldflags '-s -w'"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=check" -o "$tmp/out/telegauge" ./cmd/telegauge)
bin=$tmp/out/telegauge
if ldd "$bin" >/dev/null 2>&1; then echo "not a static binary" >&2; exit 1; fi
"$bin" version

echo "== final stage: non-root, config from deploy/telegauge.yaml, data in a volume"
mkdir -p "$tmp/data" && chmod 0777 "$tmp" && chown 65532:65532 "$tmp/data" 2>/dev/null || true
run=()
if [ "$(id -u)" = 0 ]; then run=(setpriv --reuid=65532 --regid=65532 --clear-groups); fi
export TELEGAUGE_DATA_DIR=$tmp/data
# The image's file listens everywhere; protected mode needs a user first.
"${run[@]}" "$bin" users add ops --role admin >/dev/null
"${run[@]}" "$bin" devices add dev1 >/dev/null
port=$(( 20000 + RANDOM % 20000 ))
TELEGAUGE_HTTP_ADDR=127.0.0.1:$port TELEGAUGE_MQTT_ADDR=127.0.0.1:0 \
  "${run[@]}" "$bin" serve --config deploy/telegauge.yaml >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null
curl -fsS "http://127.0.0.1:$port/" | grep -qi '<script' || { echo "dashboard not embedded" >&2; exit 1; }
test "$(stat -c %u "$tmp/data/telegauge.db")" = "$( [ "$(id -u)" = 0 ] && echo 65532 || id -u)"
kill -TERM "$pid"; wait "$pid"; pid=
echo "docker-build-check: ok (graceful stop, exit 0)"
