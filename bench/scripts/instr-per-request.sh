#!/usr/bin/env bash
# User-space instructions per request of meshd, counted by cachegrind: meshd runs under
# valgrind twice, once for a warm-up only and once for the warm-up and N more requests,
# and the difference of the two counts is divided by N. Instruction counts do not move
# with the machine's load, unlike CPU time on a shared VM; they miss what the kernel does.
# meshd on CPU 1, the upstream and h2load on CPU 0.
# Usage: bench/scripts/instr-per-request.sh [MESHD] [OUT] [N]   (from the repository root,
#        bin/ built; PROTO=h1 for HTTP/1.1, default h2c with 10 streams per connection;
#        needs valgrind and h2load; cg_annotate OUT/diff.out lists the functions;
#        CACHESIM=yes adds cachegrind's simulated cache misses per request; MESHD=haproxy
#        (or haproxy as the first argument) counts HAProxy instead, one thread, with the same load and upstream)
set -uo pipefail
MESHD=${1:-${MESHD:-bin/meshd}}; OUT=${2:-/tmp/instr-per-request}; N=${3:-20000}; M=${MESHBENCH:-bin/meshbench}
mkdir -p "$OUT"; dir=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
write_mesh "$dir"
LOAD="-c 10 -m 10"; BIND="proto h2"
if [ "${PROTO:-h2c}" = h1 ]; then LOAD="--h1 -c 10"; BIND=""; fi
write_haproxy "$dir" "$BIND" ""
PORT=29402; [ "$MESHD" = haproxy ] && PORT=29403
taskset -c 0 "$M" internal upstream -listen 127.0.0.1:29400 >/dev/null 2>&1 & U=$!
trap 'kill $U 2>/dev/null; rm -rf "$dir"' EXIT
H="-H :authority:upstream.bench.local"
for n in 0 "$N"; do
  if [ "$MESHD" = haproxy ]; then
    taskset -c 1 valgrind --tool=cachegrind --cache-sim=${CACHESIM:-no} --cachegrind-out-file="$OUT/cg.$n" \
      haproxy -db -f "$dir/haproxy.cfg" >"$OUT/vg.$n.log" 2>&1 & D=$!
    for _ in $(seq 600); do (echo > /dev/tcp/127.0.0.1/29403) 2>/dev/null && break; sleep 0.2; done
  else
    # rdtscp off and no async preemption: valgrind runs neither faithfully.
    GODEBUG=cpu.rdtscp=off,asyncpreemptoff=1 MESHD_DRAIN_GRACE=0s taskset -c 1 valgrind --tool=cachegrind --cache-sim=${CACHESIM:-no} \
      --cachegrind-out-file="$OUT/cg.$n" "$MESHD" run -c "$dir/mesh.yaml" --node client --admin-addr 127.0.0.1:19903 \
      --ingress-port 25020 --egress-port 29402 --log-level error >"$OUT/vg.$n.log" 2>&1 & D=$!
    for _ in $(seq 600); do curl -fs -o /dev/null http://127.0.0.1:19903/ready && break; sleep 0.2; done
  fi
  taskset -c 0 h2load $LOAD -n 2000 $H http://127.0.0.1:$PORT/ >/dev/null
  if [ "$n" -gt 0 ]; then taskset -c 0 h2load $LOAD -n "$n" $H http://127.0.0.1:$PORT/ | grep "requests:"; fi
  kill -TERM $D; wait $D
done
cg_diff "$OUT/cg.0" "$OUT/cg.$N" > "$OUT/diff.out" 2>/dev/null
i0=$(grep -E "^summary:" "$OUT/cg.0" | awk '{print $2}'); i1=$(grep -E "^summary:" "$OUT/cg.$N" | awk '{print $2}')
echo "instructions per request: $(( (i1 - i0) / N ))"
if [ "${CACHESIM:-no}" = yes ]; then
  # events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
  paste <(grep -E "^summary:" "$OUT/cg.0" | tr ' ' '\n' | tail -n +2) <(grep -E "^summary:" "$OUT/cg.$N" | tr ' ' '\n' | tail -n +2) |
    awk -v n="$N" 'BEGIN{split("Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw", e, " ")} {printf "%s %.1f  ", e[NR], ($2-$1)/n} END{print ""}'
fi
