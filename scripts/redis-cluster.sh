#!/usr/bin/env bash
# scripts/redis-cluster.sh — a throwaway Redis Cluster on loopback for the
# tests and bench-cluster: 3 masters + 3 replicas from Debian's redis-server
# (7.0), each in its own folder under DIR, on free ports (asked of the kernel
# by binding port 0, client and cluster-bus ports both), torn down by `stop`.
#
#   redis-cluster.sh start DIR [OWNER_PID]
#                                start, form the cluster, wait until every
#                                slot is served (bounded); writes DIR/env:
#                                RK_REDIS_SEEDS=127.0.0.1:P1,... and
#                                RK_REDIS_PORTS="P1 ... P6" (masters first);
#                                with OWNER_PID, a watchdog stops the cluster
#                                when that process is gone (a crashed test)
#   redis-cluster.sh stop DIR    SIGTERM every node, SIGKILL after 5 s,
#                                delete DIR
#   redis-cluster.sh kill DIR PORT [SIG]  send SIG (default KILL) to the node
#                                on PORT (failover tests; STOP/CONT: a hung node)
#   redis-cluster.sh restart DIR PORT  start that node again (it rejoins: a
#                                killed master comes back as a replica)
#
# Persistence: appendonly yes, appendfsync everysec on every node;
# cluster-node-timeout 1000 ms so a killed master fails over in ~2-3 s;
# cluster-allow-reads-when-down yes: while a failed master's slots have no
# owner yet, the other masters keep answering reads of theirs (a cache tier
# prefers that to refusing every key).
# On any failure `start` tears down what it started (trap) and exits 1.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR | kill DIR PORT" >&2; exit 2; }
dir=$(realpath -m "$dir") # redis-server changes into --dir before opening its log
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}

stop_all() {
  local pids=() f
  for f in "$dir"/n*/pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}

free_ports() { # N free loopback ports, all held at once so they differ
  /usr/bin/python3 - "$1" <<'EOF'
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
}

case "$cmd" in
stop) stop_all; exit 0 ;;
kill)
  port=${3:?port}
  for f in "$dir"/n*/port; do
    if [ "$(cat "$f")" = "$port" ]; then kill -"${4:-KILL}" "$(cat "$(dirname "$f")/pid")"; exit 0; fi
  done
  echo "redis-cluster: no node on port $port in $dir" >&2; exit 1 ;;
restart)
  port=${3:?port}
  for f in "$dir"/n*/port; do
    d=$(dirname "$f")
    [ "$(cat "$f")" = "$port" ] || continue
    eval "${REDIS_SERVER:-redis-server} $(cat "$d/cmdline")" >/dev/null
    for _ in $(seq 100); do
      "${REDIS_CLI:-redis-cli}" -p "$port" ping 2>/dev/null | grep -q PONG && { cp "$d/redis.pid" "$d/pid"; exit 0; }
      sleep 0.1
    done
    echo "redis-cluster: node on port $port did not restart" >&2; exit 1
  done
  echo "redis-cluster: no node on port $port in $dir" >&2; exit 1 ;;
start) ;;
*) echo "redis-cluster: unknown command '$cmd'" >&2; exit 2 ;;
esac

command -v "$REDIS_SERVER" >/dev/null || { echo "redis-cluster: $REDIS_SERVER not found (scripts/setup.sh installs redis-server)" >&2; exit 1; }
[ -e "$dir" ] && { echo "redis-cluster: $dir already exists" >&2; exit 1; }
mkdir -p "$dir"
trap 'stop_all; echo "redis-cluster: start failed, torn down" >&2' ERR
read -r -a ports <<<"$(free_ports 12)"
seeds=()
for i in 0 1 2 3 4 5; do
  p=${ports[$i]}; bus=${ports[$((i + 6))]}; d="$dir/n$i"
  mkdir -p "$d"
  echo "$p" >"$d/port"
  args=(--port "$p" --cluster-port "$bus" --bind 127.0.0.1 --protected-mode no
    --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 1000
    --cluster-allow-reads-when-down yes
    --dir "$d" --appendonly yes --appendfsync everysec --save ""
    --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log")
  printf '%q ' "${args[@]}" >"$d/cmdline"
  "$REDIS_SERVER" "${args[@]}" >/dev/null
  seeds+=("127.0.0.1:$p")
done
for i in 0 1 2 3 4 5; do # wait for each node to answer PING (<= 10 s)
  ok=0
  for _ in $(seq 100); do
    if "$REDIS_CLI" -p "${ports[$i]}" ping 2>/dev/null | grep -q PONG; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "redis-cluster: node on port ${ports[$i]} did not start: $(tail -3 "$dir/n$i/redis.log")" >&2; false; }
  cp "$dir/n$i/redis.pid" "$dir/n$i/pid"
done
"$REDIS_CLI" --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
  { echo "redis-cluster: cluster create failed: $(tail -5 "$dir/create.log")" >&2; false; }
ok=0
for _ in $(seq 200); do # all 16384 slots served, 6 nodes known (<= 20 s)
  if "$REDIS_CLI" -p "${ports[0]}" cluster info 2>/dev/null | grep -q "cluster_state:ok" &&
     "$REDIS_CLI" -p "${ports[0]}" --cluster check "127.0.0.1:${ports[0]}" 2>/dev/null | grep -q "All 16384 slots covered"; then
    ok=1; break
  fi
  sleep 0.1
done
[ $ok = 1 ] || { echo "redis-cluster: cluster did not reach state ok" >&2; false; }
ok=0
for _ in $(seq 200); do # every replica linked to its master (<= 20 s), so WAIT 1 can succeed
  up=0
  for i in 0 1 2 3 4 5; do
    "$REDIS_CLI" -p "${ports[$i]}" info replication 2>/dev/null | grep -Eq "connected_slaves:1|master_link_status:up" && up=$((up + 1))
  done
  [ $up = 6 ] && { ok=1; break; }
  sleep 0.1
done
[ $ok = 1 ] || { echo "redis-cluster: replicas did not link to their masters" >&2; false; }
masters=(); replicas=()
for i in 0 1 2 3 4 5; do
  if "$REDIS_CLI" -p "${ports[$i]}" role | head -1 | grep -q master; then masters+=("${ports[$i]}"); else replicas+=("${ports[$i]}"); fi
done
{
  echo "RK_REDIS_SEEDS=$(IFS=,; echo "${seeds[*]}")"
  echo "RK_REDIS_PORTS=\"${masters[*]} ${replicas[*]}\""
} >"$dir/env"
trap - ERR
if [ -n "${3:-}" ]; then # the watchdog: polls once a second, ends with the owner or the folder
  owner=$3
  setsid bash -c 'while kill -0 '"$owner"' 2>/dev/null && [ -d "$1" ]; do sleep 1; done; [ -d "$1" ] && exec "$2" stop "$1"' \
    _ "$dir" "$(readlink -f "$0")" </dev/null >/dev/null 2>&1 &
fi
echo "redis-cluster: up in $dir (masters ${masters[*]}, replicas ${replicas[*]})" >&2
