#!/usr/bin/env bash
# Two meshd binaries and HAProxy, one after the other, ITER times: CPU per request (user
# and system, from /proc/PID/stat over the measured run) at saturation under h2load
# (h2c, 50 connections x 10 streams, N requests after 30,000 to warm up). A fresh meshd
# process per sample. Proxy on CPU 1, load on CPU 0, the upstream on CPU UPCPU (1 by
# default, shared with the proxy as meshbench's --cpus 0:1:1 does).
# Usage: bench/scripts/saturation-ab.sh MESHD_A MESHD_B [ITER] [N]   (from the repository
#        root, bin/ built; PROTO=h1 for HTTP/1.1: h2load --h1 -c 50; needs h2load, haproxy, bc)
set -uo pipefail
A=$1; B=$2; IT=${3:-6}; N=${4:-150000}; M=${MESHBENCH:-bin/meshbench}; dir=$(mktemp -d)
. "$(dirname "$0")/lib.sh"
write_mesh "$dir"
BIND="proto h2"; LOAD="-c 50 -m 10"
if [ "${PROTO:-h2c}" = h1 ]; then BIND=""; LOAD="--h1 -c 50"; fi
write_haproxy "$dir" "$BIND" ""
taskset -c ${UPCPU:-1} "$M" internal upstream -listen 127.0.0.1:29400 >/dev/null 2>&1 & U=$!
taskset -c 1 haproxy -f "$dir/haproxy.cfg" -db >/dev/null 2>&1 & HP=$!
trap 'kill $U $HP 2>/dev/null; wait $U $HP 2>/dev/null; rm -rf "$dir"' EXIT
H="-H :authority:upstream.bench.local"
measure() { # name pid port
  taskset -c 0 h2load $LOAD -n 30000 $H http://127.0.0.1:$3/ >/dev/null
  read u0 s0 < <(awk '{print $14, $15}' /proc/$2/stat)
  taskset -c 0 h2load $LOAD -n $N $H http://127.0.0.1:$3/ > $dir/h2load.txt
  read u1 s1 < <(awk '{print $14, $15}' /proc/$2/stat)
  rps=$(grep -oE "finished in [0-9.]+s, [0-9.]+ req/s" $dir/h2load.txt | grep -oE "[0-9.]+ req/s")
  ok=$(grep -oE "[0-9]+ succeeded" $dir/h2load.txt)
  printf "%-8s %6.2f µs/req (user %6.2f sys %6.2f)  %s  %s\n" $1 $(echo "($u1-$u0+$s1-$s0)*10000/$N" | bc -l) $(echo "($u1-$u0)*10000/$N" | bc -l) $(echo "($s1-$s0)*10000/$N" | bc -l) "$rps" "$ok"
}
for i in $(seq $IT); do
  for t in "A $A" "B $B"; do
    set -- $t
    taskset -c 1 "$2" run -c "$dir/mesh.yaml" --node client --admin-addr 127.0.0.1:19903 \
      --ingress-port 25020 --egress-port 29402 --log-level error >/dev/null 2>&1 & D=$!
    for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19903/ready && break; sleep 0.1; done
    measure "$i:$1" $D 29402
    kill $D; wait $D 2>/dev/null
  done
  measure "$i:HAP" $HP 29403
done
