#!/usr/bin/env bash
# perf stat of meshd and HAProxy at 1000 req/s (meshbench --target; h2c 8 connections x 10 streams by default), proxy+upstream on CPU 1, load on CPU 0.
# Usage: bench/scripts/low-rate-stat.sh [MESHD] [OUT]   (from the repository root, bin/ built; RECORD=1 to perf record meshd;
#        PROTO=h1 STREAMS=1 BINDOPT= for HTTP/1.1; PROTO=grpc UPPROTO=grpc HPSERVEROPT='proto h2' for gRPC;
#        XGODEBUG=... adds GODEBUG settings for meshd)
set -uo pipefail
MESHD=${1:-bin/meshd}; OUT=${2:-/tmp/low-rate-stat}; M=${MESHBENCH:-bin/meshbench}; mkdir -p $OUT; dir=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
write_mesh "$dir" "${UPPROTO:-http}"
write_haproxy "$dir" "${BINDOPT-proto h2}" "${HPSERVEROPT:-}"
taskset -c 1 "$M" internal upstream -listen 127.0.0.1:29400 >/dev/null 2>&1 & U=$!
GODEBUG=${XGODEBUG:-} taskset -c 1 "$MESHD" run -c "$dir/mesh.yaml" --node client --admin-addr 127.0.0.1:19903 \
  --ingress-port 25020 --egress-port 29402 --log-level error >/dev/null 2>&1 & D=$!
taskset -c 1 haproxy -f "$dir/haproxy.cfg" -db >/dev/null 2>&1 & HP=$!
trap 'kill $U $D $HP 2>/dev/null; wait $U $D $HP 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19903/ready && break; sleep 0.1; done
for t in "meshd $D 29402" "haproxy $HP 29403" "meshd $D 29402" "haproxy $HP 29403"; do
  set -- $t
  taskset -c 0 $M --target http://127.0.0.1:$3/ --host upstream.bench.local --label $1 --proto ${PROTO:-h2c} --streams ${STREAMS:-10} --rate 1000 --max-connections 0 \
     --duration 8s --warmup 1s --rounds 1 --out $dir/r >$dir/mb.txt 2>&1 & W=$!
  sleep 3
  pid=$2
  read u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
  perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,syscalls:sys_enter_clock_nanosleep -p $pid -- sleep 4 2> $dir/stat
  read u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
  if [ -n "${RECORD:-}" ] && [ $1 = meshd ] && [ ! -f $OUT/perf.data ]; then perf record -F 4999 -g -p $pid -o $OUT/perf.data -- sleep 2 >/dev/null 2>&1; fi
  wait $W
  echo "$1: user ticks $((u1-u0)) sys ticks $((s1-s0)) (4 s at 1000 req/s => ticks*10/4 = µs/req)"
  awk -F, '{printf "   %-40s %10.3f per req\n", $3, $1/4000}' $dir/stat
  grep -E "^\| *$1" $dir/r/*.md 2>/dev/null | head -3; grep -iE "p50|$1" $dir/mb.txt | head -4
done
