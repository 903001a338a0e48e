#!/usr/bin/env bash
# etch's two fronts on one 3-node cluster: the same workloads through the QUIC front
# (etch-bench, etch's SDK) and through the gRPC front (etcdbench, the etcd client), against
# the leader only and (gRPC put100) against every member, with the CPU the three nodes
# spent on each run (from /proc, in ms). Needs release etchd, etchctl and etch-bench
# (scripts/bench-suite builds them) and etcdbench (run.sh builds it).
#
#   bench/etcd-baseline/fronts.sh        (READS=N: requests per read run, 50000 by default)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=${CARGO_TARGET_DIR:-/tmp/etcd-baseline-target}/release/etcdbench
bin=${CARGO_TARGET_DIR_ETCH:-$root/target}/release
dir=$(mktemp -d /tmp/etch-fronts.XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
  if [ -n "${group:-}" ]; then rmdir "$group" 2>/dev/null || true; fi
}
trap cleanup EXIT
"$bin/etchctl" certs init --dir "$dir/certs" --nodes n1,n2,n3 --clients root >/dev/null
# PIN=1: the nodes on CPU 0, the load generators on CPU 1, so that a client's own cost does
# not take CPU from the nodes (what the fronts can serve, rather than what this machine
# can run of client and server together).
#
# QUOTA=P (implies PIN=1): the nodes also share P % of CPU 0 (a cgroup's CPU quota; needs
# root and a writable cgroup cpu controller). With P low enough that every load generator
# sends faster than the nodes can answer, each run measures the front's own throughput:
# what the node can serve through it, not what the client can send.
node_pin=() client_pin=()
if [ "${PIN:-0}" = 1 ] || [ -n "${QUOTA:-}" ]; then node_pin=(taskset -c 0) client_pin=(taskset -c 1); fi
group=
if [ -n "${QUOTA:-}" ]; then
  if [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then
    group=/sys/fs/cgroup/cpu/etch-fronts.$$
    mkdir "$group"
    echo 100000 >"$group/cpu.cfs_period_us"
    echo $((QUOTA * 1000)) >"$group/cpu.cfs_quota_us"
  elif [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then
    group=/sys/fs/cgroup/etch-fronts.$$
    mkdir "$group"
    echo "$((QUOTA * 1000)) 100000" >"$group/cpu.max"
  else
    echo "QUOTA needs a writable cgroup cpu controller (run as root)" >&2
    exit 2
  fi
fi
cluster="n1=127.0.0.1:12380,n2=127.0.0.1:22380,n3=127.0.0.1:32380"
for i in 1 2 3; do
  RUST_LOG=error ${node_pin[@]+"${node_pin[@]}"} "$bin/etchd" --name n$i --data-dir "$dir/n$i" \
    --listen-client 127.0.0.1:${i}2379 --listen-peer 127.0.0.1:${i}2380 \
    --initial-cluster "$cluster" --ca "$dir/certs/ca.crt" \
    --cert "$dir/certs/n$i.crt" --key "$dir/certs/n$i.key" >"$dir/n$i.log" 2>&1 &
  pids+=($!)
  if [ -n "$group" ]; then echo $! >"$group/cgroup.procs"; fi
done
tls=(--cacert "$dir/certs/ca.crt" --cert "$dir/certs/root.crt" --key "$dir/certs/root.key")
all=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
for _ in $(seq 100); do
  "$bin/etchctl" --endpoints $all "${tls[@]}" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
leader=$("$bin/etchctl" --endpoints $all "${tls[@]}" endpoint status -w json | python3 -c '
import json, sys
print([s["Endpoint"] for s in json.load(sys.stdin) if s["Status"]["header"]["member_id"] == s["Status"]["leader"]][0])')
# The key the gets read, as etcdbench writes it before its gets (8 bytes, a 256-byte value):
# both fronts answer the same bytes.
"$bin/etchctl" --endpoints $leader "${tls[@]}" put 00000000 "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
ticks() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
# Each run: the CPU the three nodes spent and the CPU the load generator spent (user and
# system, ms), then the generator's throughput line.
measure() {
  local name=$1; shift
  local a b out client
  a=$(ticks)
  { TIMEFORMAT='%3U %3S'; time ${client_pin[@]+"${client_pin[@]}"} "$@" >"$dir/out" 2>&1; } 2>"$dir/time"
  b=$(ticks)
  out=$(grep -E 'Requests/sec|qps=' "$dir/out" | tr -s ' \t\n' ' ')
  client=$(awk '{printf "%d", ($1 + $2) * 1000}' "$dir/time")
  echo "$name: nodes_cpu_ms=$(( (b - a) * 1000 / $(getconf CLK_TCK) )) client_cpu_ms=$client $out"
}
echo "leader $leader"
measure quic-put100 "$bin/etch-bench" --endpoints $leader "${tls[@]}" put --conns 10 --clients 100 --total 50000 --key-space-size 10000 --sequential-keys
measure grpc-put100 "$bench" --endpoints https://$leader "${tls[@]}" --op put --conns 10 --clients 100 --total 50000
measure grpc-put100-all "$bench" --endpoints https://${all//,/,https://} "${tls[@]}" --op put --conns 10 --clients 100 --total 50000
measure quic-getl "$bin/etch-bench" --endpoints $leader "${tls[@]}" range 00000000 --conns 10 --clients 100 --total ${READS:-50000}
measure grpc-getl "$bench" --endpoints https://$leader "${tls[@]}" --op get-lin --conns 10 --clients 100 --total ${READS:-50000}
measure quic-gets "$bin/etch-bench" --endpoints $leader "${tls[@]}" range 00000000 --consistency s --conns 10 --clients 100 --total ${READS:-50000}
measure grpc-gets "$bench" --endpoints https://$leader "${tls[@]}" --op get-ser --conns 10 --clients 100 --total ${READS:-50000}
measure quic-put1 "$bin/etch-bench" --endpoints $leader "${tls[@]}" put --total 2000 --key-space-size 10000 --sequential-keys
measure grpc-put1 "$bench" --endpoints https://$leader "${tls[@]}" --op put --conns 1 --clients 1 --total 2000
