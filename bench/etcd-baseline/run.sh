#!/usr/bin/env bash
# The same etcd client against etcd and against etch. Starts a 3-node cluster on loopback —
# etcd (TARGET=etcd, the default; Debian's etcd-server) or etch (TARGET=etch; the release
# etchd, reached through its etcd v3 gRPC front with mutual TLS) — runs the workloads with
# etcdbench (this directory: etcd-client, the shapes of etcd's benchmark tool), prints one
# line per workload, then each node's RSS and disk use, and stops the cluster.
#
#   bench/etcd-baseline/run.sh                            # etcd, every workload
#   TARGET=etch WORKLOADS="put1 put100" bench/etcd-baseline/run.sh
#
# Workloads (8-byte keys; 256-byte values unless said):
#   put1    put, 1 connection, 1 client, 2000 requests
#   put100  put, 10 connections, 100 clients, 50000 requests
#   getl    linearizable get of one key, 10 connections, 100 clients, 50000 requests
#   gets    serializable get of one key, 10 connections, 100 clients, 50000 requests
#   range   linearizable ranges of 10000 keys (limit 10000) with 256-byte values, 10
#           connections, 10 clients, 500 requests; the keys (numbers from 90000000) are
#           written first, as `etch-bench suite` does
#   grow    300000 sequential puts of new keys with 1 KiB values, 10 connections, 100
#           clients, in three chunks of 100000 (grow1..grow3), as `etch-bench suite` runs it
#   catchup a fourth member added to the cluster as it stands (after grow, its data set):
#           `member add` (etcdctl for etcd, etchctl for etch, which must name the member),
#           the node started with --initial-cluster-state existing, timed until a
#           serializable get on it answers at the revision the cluster had before the add
# SCALE multiplies the request counts (e.g. SCALE=0.01 for a smoke run); OUT=FILE appends
# each result to FILE as a JSON line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
TARGET=${TARGET:-etcd}
WORKLOADS=${WORKLOADS:-"put1 put100 getl gets range grow catchup"}
SCALE=${SCALE:-1}
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s + 0.5); print (v < 1 ? 1 : v) }'; }
install() { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
command -v protoc >/dev/null || install protobuf-compiler
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/etcd-baseline-target}
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bench=$CARGO_TARGET_DIR/release/etcdbench
dir=$(mktemp -d /tmp/etcd-baseline.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
tls=()
case $TARGET in
  etcd)
    command -v etcd >/dev/null || install etcd-server
    cluster="n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380,n3=http://127.0.0.1:32380"
    for i in 1 2 3; do
      etcd --name n$i --data-dir "$dir/n$i" \
        --listen-peer-urls http://127.0.0.1:${i}2380 --initial-advertise-peer-urls http://127.0.0.1:${i}2380 \
        --listen-client-urls http://127.0.0.1:${i}2379 --advertise-client-urls http://127.0.0.1:${i}2379 \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token baseline \
        --logger zap --log-level error >"$dir/n$i.log" 2>&1 &
      pids+=($!)
    done
    eps=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
    ;;
  etch)
    # etch's own target directory, not the load generator's; ETCH_BIN=DIR runs the etchd
    # and etchctl in DIR as they are (an A/B of two builds).
    if [ -n "${ETCH_BIN:-}" ]; then
      etchd=$ETCH_BIN/etchd etchctl=$ETCH_BIN/etchctl
    else
      etch_target=${CARGO_TARGET_DIR_ETCH:-$root/target}
      (cd "$root" && CARGO_TARGET_DIR=$etch_target cargo build --release --quiet -p etch-host -p etch-cli --bins)
      etchd=$etch_target/release/etchd
      etchctl=$etch_target/release/etchctl
    fi
    "$etchctl" certs init --dir "$dir/certs" --nodes n1,n2,n3,n4 --clients root >/dev/null
    cluster="n1=127.0.0.1:12380,n2=127.0.0.1:22380,n3=127.0.0.1:32380"
    for i in 1 2 3; do
      RUST_LOG=error "$etchd" --name n$i --data-dir "$dir/n$i" \
        --listen-client 127.0.0.1:${i}2379 --listen-peer 127.0.0.1:${i}2380 \
        --initial-cluster "$cluster" --ca "$dir/certs/ca.crt" \
        --cert "$dir/certs/n$i.crt" --key "$dir/certs/n$i.key" >"$dir/n$i.log" 2>&1 &
      pids+=($!)
    done
    eps=https://127.0.0.1:12379,https://127.0.0.1:22379,https://127.0.0.1:32379
    tls=(--cacert "$dir/certs/ca.crt" --cert "$dir/certs/root.crt" --key "$dir/certs/root.key")
    ;;
  *) echo "TARGET is etcd or etch, not $TARGET" >&2; exit 2 ;;
esac
ctl_tls=()
[ ${#tls[@]} -gt 0 ] && ctl_tls=(--cacert "$dir/certs/ca.crt" --cert "$dir/certs/root.crt" --key "$dir/certs/root.key")
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints=$eps "${ctl_tls[@]}" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
# OUT=FILE: each workload's result is also appended to FILE as a JSON line (what
# `etch-bench suite --baseline FILE --plot` draws beside etch's).
run() {
  local json=()
  [ -n "${OUT:-}" ] && json=(--json-out "$OUT" --name "$1")
  echo "$1: $("$bench" --endpoints $eps "${tls[@]}" "${@:2}" ${json[@]+"${json[@]}"})"
}
# The revision a serializable get on endpoint $1 answers at (0 if it does not answer).
revision_at() {
  ETCDCTL_API=3 etcdctl --endpoints="$1" "${ctl_tls[@]}" get probe --consistency="${2:-s}" -w json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])' 2>/dev/null || echo 0
}
catch_up() {
  local rev start new
  rev=$(revision_at "$eps" l)
  start=$(date +%s.%N)
  case $TARGET in
    etcd)
      # etcd refuses a member add until every member has been connected for 5 s (a young
      # cluster): the clock starts at the attempt that is accepted.
      until start=$(date +%s.%N)
        ETCDCTL_API=3 etcdctl --endpoints=$eps member add n4 --peer-urls=http://127.0.0.1:42380 >/dev/null 2>&1; do
        sleep 0.5
      done
      etcd --name n4 --data-dir "$dir/n4" \
        --listen-peer-urls http://127.0.0.1:42380 --initial-advertise-peer-urls http://127.0.0.1:42380 \
        --listen-client-urls http://127.0.0.1:42379 --advertise-client-urls http://127.0.0.1:42379 \
        --initial-cluster "$cluster,n4=http://127.0.0.1:42380" --initial-cluster-state existing \
        --logger zap --log-level error >"$dir/n4.log" 2>&1 &
      pids+=($!)
      new=http://127.0.0.1:42379
      ;;
    etch)
      "$etchctl" --endpoints "${eps//https:\/\//}" "${ctl_tls[@]}" member add n4 --peer-urls 127.0.0.1:42380 >/dev/null
      RUST_LOG=error "$etchd" --name n4 --data-dir "$dir/n4" \
        --listen-client 127.0.0.1:42379 --listen-peer 127.0.0.1:42380 \
        --initial-cluster "$cluster,n4=127.0.0.1:42380" --initial-cluster-state existing \
        --ca "$dir/certs/ca.crt" --cert "$dir/certs/n4.crt" --key "$dir/certs/n4.key" >"$dir/n4.log" 2>&1 &
      pids+=($!)
      new=https://127.0.0.1:42379
      ;;
  esac
  until [ "$(revision_at $new)" -ge "$rev" ]; do sleep 0.05; done
  echo "catchup: revision=$rev secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
}
for w in $WORKLOADS; do
  case $w in
    put1)   run put1 --op put --conns 1 --clients 1 --total "$(scaled 2000)" ;;
    put100) run put100 --op put --conns 10 --clients 100 --total "$(scaled 50000)" ;;
    getl)   run getl --op get-lin --conns 10 --clients 100 --total "$(scaled 50000)" ;;
    gets)   run gets --op get-ser --conns 10 --clients 100 --total "$(scaled 50000)" ;;
    range)
      keys=$(scaled 10000)
      "$bench" --endpoints $eps "${tls[@]}" --op put --conns 10 --clients 10 --total "$keys" \
        --key-offset 90000000 --key-space 100000000 >/dev/null
      run range --op range --conns 10 --clients 10 --total "$(scaled 500)" --limit "$keys" \
        --key-offset 90000000
      ;;
    grow)
      chunk=$(scaled 100000)
      for c in 0 1 2; do
        run grow$((c + 1)) --op put --conns 10 --clients 100 --total "$chunk" --val-size 1024 \
          --key-space $((3 * chunk)) --key-offset $((c * chunk))
      done
      ;;
    catchup) catch_up ;;
    *) echo "unknown workload $w" >&2; exit 2 ;;
  esac
done
for i in 1 2 3; do
  rss=$(awk '/VmRSS/{print $2}' /proc/${pids[$((i-1))]}/status 2>/dev/null || echo 0)
  disk=$(du -sb "$dir/n$i" | cut -f1)
  echo "$TARGET n$i rss_kib=$rss disk_bytes=$disk"
done
