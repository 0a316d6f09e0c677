#!/usr/bin/env bash
# The Go floor and meshd under wrk (a C load generator) instead of meshbench's client:
# CPU, context switches and syscalls per request of each proxy at saturation, from
# perf stat on the proxy's process. Load on CPU 0; proxy and upstream on CPU 1.
# Usage: bench/scripts/floor-wrk.sh [MESHD] [MESHBENCH]   (needs wrk, perf, taskset)
set -euo pipefail
MESHD=${1:-bin/meshd}
M=${2:-bin/meshbench}
dir=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
write_mesh "$dir"
taskset -c 1 "$M" internal upstream -listen 127.0.0.1:29400 >/dev/null 2>&1 & U=$!
taskset -c 1 "$M" internal floor -listen 127.0.0.1:29401 -upstream 127.0.0.1:29400 >/dev/null 2>&1 & F=$!
taskset -c 1 "$MESHD" run -c "$dir/mesh.yaml" --node client --admin-addr 127.0.0.1:19903 \
  --ingress-port 25020 --egress-port 29402 --log-level error >/dev/null 2>&1 & D=$!
trap 'kill $U $F $D 2>/dev/null; wait $U $F $D 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -fs -o /dev/null http://127.0.0.1:19903/ready && break
  sleep 0.1
done
for t in "floor $F 29401" "meshd $D 29402"; do
  set -- $t
  taskset -c 0 wrk -t1 -c50 -d1s -H 'Host: upstream.bench.local' "http://127.0.0.1:$3/" >/dev/null
  taskset -c 0 wrk -t1 -c50 -d6s -H 'Host: upstream.bench.local' "http://127.0.0.1:$3/" > "$dir/wrk-$1" & W=$!
  sleep 1
  perf stat -x, -e task-clock,context-switches,syscalls:sys_enter_read,syscalls:sys_enter_write \
    -p "$2" -- sleep 4 2> "$dir/perf-$1"
  wait $W
  rps=$(awk '/Requests\/sec/ {print $2}' "$dir/wrk-$1")
  awk -F, -v name="$1" -v rps="$rps" '
    $3 == "task-clock" {cpu = $1}
    $3 == "context-switches" {cs = $1}
    $3 ~ /sys_enter_read/ {rd = $1}
    $3 ~ /sys_enter_write/ {wr = $1}
    END {n = rps * 4; printf "%-6s %9.0f req/s  %6.1f us CPU/req  %5.2f cs/req  %5.2f reads/req  %5.2f writes/req\n",
      name, rps, cpu * 1000 / n, cs / n, rd / n, wr / n}' "$dir/perf-$1"
done
