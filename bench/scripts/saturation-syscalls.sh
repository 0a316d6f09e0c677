#!/usr/bin/env bash
# System calls and context switches per request of meshd and of HAProxy at saturation
# (perf stat -p over one h2load run each: h2c 50 connections x 10 streams, or HTTP/1.1
# 50 connections with PROTO=h1; N requests after 30,000 to warm up). Proxies and the
# upstream on CPU 1, load on CPU 0.
# Usage: bench/scripts/saturation-syscalls.sh [MESHD] [N]   (from the repository root,
#        bin/ built; needs h2load, haproxy, perf)
set -uo pipefail
MESHD=${1:-bin/meshd}; N=${2:-200000}; M=${MESHBENCH:-bin/meshbench}; dir=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
write_mesh "$dir"
BIND="proto h2"; LOAD="-c 50 -m 10"
if [ "${PROTO:-h2c}" = h1 ]; then BIND=""; LOAD="--h1 -c 50"; fi
write_haproxy "$dir" "$BIND" ""
taskset -c 1 "$M" internal upstream -listen 127.0.0.1:29400 >/dev/null 2>&1 & U=$!
taskset -c 1 haproxy -f "$dir/haproxy.cfg" -db >/dev/null 2>&1 & HP=$!
taskset -c 1 "$MESHD" run -c "$dir/mesh.yaml" --node client --admin-addr 127.0.0.1:19903 \
  --ingress-port 25020 --egress-port 29402 --log-level error >/dev/null 2>&1 & D=$!
trap 'kill $U $D $HP 2>/dev/null; wait $U $D $HP 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19903/ready && break; sleep 0.1; done
H="-H :authority:upstream.bench.local"
EV=context-switches,raw_syscalls:sys_enter
for s in read write recvfrom sendto readv writev epoll_pwait epoll_wait epoll_ctl futex nanosleep; do EV=$EV,syscalls:sys_enter_$s; done
for t in "meshd $D 29402" "haproxy $HP 29403"; do
  set -- $t
  taskset -c 0 h2load $LOAD -n 30000 $H http://127.0.0.1:$3/ >/dev/null
  perf stat -x, -e $EV -p $2 -o "$dir/stat" -- sleep 600 2>"$dir/perf.err" & P=$!
  sleep 0.3
  taskset -c 0 h2load $LOAD -n "$N" $H http://127.0.0.1:$3/ | grep -E "^requests:|req/s" | head -2
  pkill -P $P sleep; wait $P
  grep -v Terminated "$dir/perf.err" >&2  # perf's own errors (a missing tracepoint, no permission)
  echo "== $1 (per request)"
  awk -F, -v n="$N" '$1 ~ /^[0-9]/ && $1 > 0 {printf "   %-36s %8.3f\n", $3, $1/n}' "$dir/stat"
done
