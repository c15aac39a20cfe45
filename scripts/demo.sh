#!/usr/bin/env bash
# Shield's demo: a local cluster on loopback (etcd plus three PostgreSQL 15 nodes managed by
# `shield`), then a failover drill: kill the primary, show the new one and the time it took, and
# show the old node rejoining. The cluster is left running.
#
#   scripts/demo.sh             build, start (or reuse) the cluster, run the drill
#   scripts/demo.sh --no-drill  just start the cluster
#   scripts/demo.sh --status    show the cluster
#   scripts/demo.sh --stop      stop everything and remove the demo directory (/tmp/shield-demo)
#
# Re-running is idempotent: a running demo cluster is reused. Ctrl-C during start-up stops what
# was started. As root, the nodes run as the unprivileged user from scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO="${SHIELD_DEMO_DIR:-/tmp/shield-demo}"
# Below the range the tests take free ports from (20000-31999), so a demo never collides with them.
ETCD_PORT=12379
PG_BASE=15432
API_BASE=18008
DRILL=1
MODE=start

for arg in "$@"; do
    case "$arg" in
        --no-drill) DRILL=0 ;;
        --stop) MODE=stop ;;
        --status) MODE=status ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "demo: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_all() {
    for i in 0 1 2; do
        if alive "$DEMO/node$i/shield.pid"; then kill -TERM "$(cat "$DEMO/node$i/shield.pid")" 2>/dev/null || true; fi
    done
    sleep 2
    for i in 0 1 2; do
        if alive "$DEMO/node$i/shield.pid"; then kill -KILL "$(cat "$DEMO/node$i/shield.pid")" 2>/dev/null || true; fi
        pm="$DEMO/node$i/data/postmaster.pid"
        if [ -f "$pm" ]; then kill -QUIT "$(head -n 1 "$pm")" 2>/dev/null || true; fi
    done
    if alive "$DEMO/etcd.pid"; then kill "$(cat "$DEMO/etcd.pid")" 2>/dev/null || true; fi
}

status() {
    if [ ! -x "$DEMO/shieldctl" ]; then echo "demo: no demo cluster in $DEMO" >&2; return 1; fi
    "$DEMO/shieldctl" -c "$DEMO/shieldctl.yml" list || true
}

primary() {
    for i in 0 1 2; do
        if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$((API_BASE + i))/primary")" = 200 ]; then
            echo "$i"
            return 0
        fi
    done
    return 1
}

case "$MODE" in
    stop) stop_all; rm -rf "$DEMO"; echo "demo: stopped and removed $DEMO"; exit 0 ;;
    status) status; exit 0 ;;
esac

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
# CI runs the demo with the debug build its tests already made (SHIELD_DEMO_PROFILE=debug).
PROFILE="${SHIELD_DEMO_PROFILE:-release}"
echo "demo: building shield ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release -q -p shield-bin
else
    cargo build -q -p shield-bin
fi

run_as=()
if [ "$(id -u)" = 0 ]; then
    run_as=(runuser -u "$SHIELD_TEST_USER" --)
fi

start_node() {
    local i=$1 dir="$DEMO/node$1"
    "${run_as[@]}" bash -c "SHIELD_LOG=info nohup '$DEMO/shield' '$dir/shield.yml' >>'$dir/shield.log' 2>&1 & echo \$! > '$dir/shield.pid'"
}

if alive "$DEMO/etcd.pid" && alive "$DEMO/node0/shield.pid"; then
    echo "demo: reusing the running cluster in $DEMO"
else
    stop_all
    rm -rf "$DEMO"
    mkdir -p "$DEMO"
    trap 'echo; echo "demo: interrupted; stopping"; stop_all; exit 130' INT TERM
    cp "$ROOT/target/$PROFILE/shield" "$ROOT/target/$PROFILE/shieldctl" "$DEMO/"
    # The REST API's unsafe requests need these credentials (as `shield init node` sets up).
    REST_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    (umask 077 && printf 'scope: demo\netcd3:\n  hosts: 127.0.0.1:%s\nctl:\n  authentication:\n    username: shield\n    password: %s\n' \
        "$ETCD_PORT" "$REST_PASSWORD" >"$DEMO/shieldctl.yml")
    "$SHIELD_ETCD_BIN" --name demo --data-dir "$DEMO/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
        --initial-cluster "demo=http://127.0.0.1:$((ETCD_PORT + 10))" --log-level warn >"$DEMO/etcd.log" 2>&1 &
    echo $! >"$DEMO/etcd.pid"
    for i in 0 1 2; do
        mkdir -p "$DEMO/node$i"
        cat >"$DEMO/node$i/shield.yml" <<EOF
scope: demo
name: node$i
restapi:
  listen: 127.0.0.1:$((API_BASE + i))
  connect_address: 127.0.0.1:$((API_BASE + i))
  authentication:
    username: shield
    password: $REST_PASSWORD
  allowlist: ['127.0.0.1']
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    postgresql:
      use_pg_rewind: true
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator 127.0.0.1/32 md5
  - host all all 127.0.0.1/32 md5
postgresql:
  listen: 127.0.0.1:$((PG_BASE + i))
  connect_address: 127.0.0.1:$((PG_BASE + i))
  data_dir: $DEMO/node$i/data
  bin_dir: $SHIELD_PG_BINDIR
  pgpass: $DEMO/node$i/pgpass
  authentication:
    superuser: {username: postgres, password: demo-su}
    replication: {username: replicator, password: demo-rep}
  parameters:
    unix_socket_directories: '$DEMO/node$i'
watchdog:
  mode: off
EOF
    done
    if [ ${#run_as[@]} -gt 0 ]; then chown -R "$SHIELD_TEST_USER" "$DEMO"; fi
    for i in 0 1 2; do start_node "$i"; done
    echo "demo: waiting for the cluster to bootstrap"
    for _ in $(seq 1 120); do primary >/dev/null && break; sleep 0.5; done
    for _ in $(seq 1 60); do
        ok=0
        for i in 0 1 2; do
            [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$((API_BASE + i))/health")" = 200 ] && ok=$((ok + 1))
        done
        [ "$ok" = 3 ] && break
        sleep 0.5
    done
    trap - INT TERM
fi
status

if [ "$DRILL" = 1 ]; then
    p=$(primary) || { echo "demo: no primary; see $DEMO/node*/shield.log" >&2; exit 1; }
    echo
    echo "demo: failover drill: killing node$p (daemon and postmaster, as a host crash would)"
    kill -KILL "$(cat "$DEMO/node$p/shield.pid")" 2>/dev/null || true
    kill -KILL "$(head -n 1 "$DEMO/node$p/data/postmaster.pid")" 2>/dev/null || true
    start=$(date +%s.%N)
    new=""
    for _ in $(seq 1 300); do
        if n=$(primary) && [ "$n" != "$p" ]; then new=$n; break; fi
        sleep 0.05
    done
    took=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
    if [ -z "$new" ]; then echo "demo: no new primary after 15 s; see $DEMO/node*/shield.log" >&2; exit 1; fi
    echo "demo: node$new is the new primary, $took s after the kill"
    echo "demo: restarting node$p; it rejoins as a replica"
    start_node "$p"
    rejoined=0
    for _ in $(seq 1 120); do
        if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$((API_BASE + p))/replica")" = 200 ]; then
            rejoined=1
            break
        fi
        sleep 0.5
    done
    if [ "$rejoined" = 0 ]; then echo "demo: node$p did not rejoin within 60 s; see $DEMO/node$p/shield.log" >&2; exit 1; fi
    echo "demo: node$p rejoined as a replica"
    status
fi

echo
echo "demo: the cluster is left running in $DEMO"
echo "  status:   $DEMO/shieldctl -c $DEMO/shieldctl.yml list   (or scripts/demo.sh --status)"
echo "  operate:  $DEMO/shieldctl -c $DEMO/shieldctl.yml switchover | history | edit-config ..."
echo "  psql:     PGPASSFILE=$DEMO/node0/pgpass psql -h 127.0.0.1 -p $PG_BASE -U postgres"
echo "  logs:     $DEMO/node*/shield.log; decisions: $DEMO/node*/data.journal.jsonl"
echo "  stop:     scripts/demo.sh --stop"
