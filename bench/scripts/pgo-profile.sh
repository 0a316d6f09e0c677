#!/usr/bin/env bash
# Writes cmd/meshd/default.pgo, the profile Go's compiler uses for profile-guided
# optimisation (`go build` picks it up by itself): meshd's CPU profile (--cpu-profile)
# under three saturating loads, merged: h2c to an HTTP/1.1 upstream, HTTP/1.1 to an
# HTTP/1.1 upstream, and h2c to an h2c upstream. Regenerate it after changes to the hot
# path; a stale profile still builds, it only optimises less.
# Usage: bench/scripts/pgo-profile.sh [N]   (from the repository root, bin/ built;
#        needs h2load; N requests per load, 300,000 by default)
set -euo pipefail
N=${1:-300000}; M=${MESHBENCH:-bin/meshbench}; dir=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
taskset -c 0 "$M" internal upstream -listen 127.0.0.1:29400 >/dev/null 2>&1 & U=$!
D=
trap 'kill $U $D 2>/dev/null; rm -rf "$dir"' EXIT
H="-H :authority:upstream.bench.local"
profile() { # name upstream-protocol h2load-options
  write_mesh "$dir" "$2"
  taskset -c 1 bin/meshd run -c "$dir/mesh.yaml" --node client --admin-addr 127.0.0.1:19903 \
    --ingress-port 25020 --egress-port 29402 --log-level error --drain-grace 0s \
    --cpu-profile "$dir/$1.pprof" >/dev/null 2>&1 & D=$!
  ready=
  for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19903/ready && ready=1 && break; sleep 0.1; done
  [ -n "$ready" ] || { echo "meshd did not become ready for $1" >&2; exit 1; }
  taskset -c 0 h2load $3 -n "$N" $H http://127.0.0.1:29402/ | grep -E "^requests:"
  kill -TERM $D; wait $D || true
  D=
  [ -s "$dir/$1.pprof" ] || { echo "no profile from the $1 load" >&2; exit 1; }
}
profile h2c-h1 http "-c 50 -m 10"
profile h1-h1 http "--h1 -c 50"
profile h2c-h2c http2 "-c 50 -m 10"
# Into place only once whole: a failed merge must not leave the committed profile empty.
go tool pprof -proto "$dir/h2c-h1.pprof" "$dir/h1-h1.pprof" "$dir/h2c-h2c.pprof" > "$dir/merged.pgo"
mv "$dir/merged.pgo" cmd/meshd/default.pgo
echo "wrote cmd/meshd/default.pgo ($(wc -c < cmd/meshd/default.pgo) bytes)"
