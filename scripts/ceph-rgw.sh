#!/usr/bin/env bash
# A throw-away Ceph RADOS Gateway (real S3 server) on 127.0.0.1 for tests.
#
#   scripts/ceph-rgw.sh start DIR [PORT]   prints exactly one line: http://127.0.0.1:PORT
#   scripts/ceph-rgw.sh stop DIR           kills what start started and removes DIR
#
# Ceph 16 (Debian bookworm) has no standalone RGW backend, so `start` builds a one-node
# cluster: one ceph-mon, one ceph-osd (bluestore on a sparse file), no manager, then
# radosgw with the beast frontend and an S3 user with fixed keys. Conf, keyring, data,
# logs and PID files all live in DIR; /etc/ceph, /var/lib/ceph and /var/log/ceph are never
# touched, and every daemon binds to 127.0.0.1 only. The data is throw-away: `stop` uses
# SIGKILL (radosgw needs ~11 s to exit on SIGTERM).
#
# Environment:
#   CEPH_RGW_ACCESS_KEY  S3 access key (default pys3fs-test-access)
#   CEPH_RGW_SECRET_KEY  S3 secret key (default pys3fs-test-secret-do-not-log)
#   CEPH_RGW_DISK_SIZE   size of the sparse bluestore file (default 16G)
#   CEPH_RGW_TIMEOUT     seconds to wait for S3 to answer (default 120)
#
# Logs: DIR/log/*.log (daemons) and DIR/log/*.out (their stdout/stderr).
# See /work/shared/s3-servers.md for why each setting below is there.
set -euo pipefail

PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)
# The RGW pools of the default zone. Created up front with 8 PGs each: the default PG
# counts exceed what a one-OSD cluster accepts.
POOLS=(.rgw.root default.rgw.control default.rgw.meta default.rgw.log
    default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec
    default.rgw.otp)
# RGW rejects a storage class its placement target does not define (InvalidArgument), where
# AWS takes all of these; they all go to the one data pool here.
STORAGE_CLASSES=(STANDARD_IA ONEZONE_IA REDUCED_REDUNDANCY INTELLIGENT_TIERING GLACIER
    GLACIER_IR DEEP_ARCHIVE)
# Ceph's Python bindings are installed for the system Python, not for any virtualenv
# that may come first on PATH.
SYSPY=/usr/bin/python3

log() { echo "ceph-rgw: $*" >&2; }
die() {
    log "$*"
    exit 1
}

usage() {
    echo "usage: $0 start DIR [PORT] | stop DIR" >&2
    exit 2
}

# --- packages ---------------------------------------------------------------------------

# Install the Ceph packages if any is missing. --no-install-recommends: the recommends
# pull in ceph-mds and a time daemon (chrony), which would talk to NTP servers. apt-get
# update only when the plain install fails (stale or missing package lists).
ensure_packages() {
    local missing=() pkg sudo=""
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing ${missing[*]} with apt-get"
    local install=($sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q
        --no-install-recommends "${missing[@]}")
    if ! "${install[@]}" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        $sudo apt-get update -q >&2
        "${install[@]}" >&2
    fi
}

# --- helpers ----------------------------------------------------------------------------

free_port() {
    $SYSPY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Start a daemon in the background, detached from our session (a Ctrl-C meant for the
# caller, e.g. pytest, must not reach it), and record its PID in DIR/pids/NAME.
# setsid does not fork here: a background job of a script is never a process-group leader,
# so $! is the daemon's own PID.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/pids/$name"
    disown # no "Killed" notices from bash when stop or a failed start kills it
}

# Does process $1 have this DIR's conf among its arguments? Every process start runs does
# (-c CONF), and no other: it tells a daemon from a process that reused its PID.
uses_conf() {
    local arg args=()
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
    for arg in "${args[@]}"; do
        [ "$arg" = "$CONF" ] && return 0
    done
    return 1
}

# Kill the daemons recorded in DIR/pids, then anything else still using the conf (a
# radosgw-admin or mkfs left behind when start itself was killed), until none is left, so
# that DIR can be removed.
kill_daemons() {
    local pidfile pid proc _
    for pidfile in "$DIR"/pids/*; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if uses_conf "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$pidfile"
    done
    for _ in $(seq 100); do
        local left=()
        for proc in /proc/[0-9]*; do
            if uses_conf "${proc#/proc/}"; then left+=("${proc#/proc/}"); fi
        done
        [ ${#left[@]} -eq 0 ] && return 0
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.05
    done
}

# All daemons still running? Otherwise show where they died.
check_alive() {
    local pidfile
    for pidfile in "$DIR"/pids/*; do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            die "$(basename "$pidfile") exited; see $DIR/log"
        fi
    done
}

# On a failed start (any exit before success): kill what was started and show the end of
# the logs. DIR stays for a look; `stop DIR` removes it.
on_start_failure() {
    local f
    kill_daemons
    for f in "$DIR"/log/*; do
        [ -s "$f" ] || continue
        echo "--- $f (last lines)" >&2
        tail -n 8 "$f" >&2
    done
    log "start failed; logs kept in $DIR/log (remove with: $0 stop $DIR)"
}

# --- cluster ----------------------------------------------------------------------------

write_conf() {
    # $name in the conf is expanded by Ceph (mon.a, osd.0, client.rgw), not by the shell.
    cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon_host = [v2:127.0.0.1:$MON_PORT]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
ms_bind_msgr1 = false

# No authentication. radosgw then loops on an auth error (-13) at start unless every
# messenger mode is plain crc.
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_cluster_mode = crc
ms_service_mode = crc
ms_client_mode = crc
ms_mon_cluster_mode = crc
ms_mon_service_mode = crc
ms_mon_client_mode = crc

# Everything in DIR, never /etc/ceph, /var/lib/ceph, /var/log/ceph, /var/run/ceph.
keyring = $DIR/keyring
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log
mon_cluster_log_file = $DIR/log/cluster.log
crash_dir = $DIR/crash
mon_data = $DIR/mon
osd_data = $DIR/osd
rgw_data = $DIR/rgw

# One OSD: no replication, small pools, no autoscaler (there is no manager anyway).
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false

[mon]
# The monitor batches map changes for paxos_propose_interval (1 s) before committing
# them: with a dozen pool commands at start, that alone would cost ~15 s.
paxos_propose_interval = 0.01
paxos_min_wait = 0.001

[osd]
# Bluestore on a sparse file (DIR/osd/block, created by mkfs) keeps memory bounded
# (memstore never gives memory back).
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $DISK_SIZE
bluestore_fsck_on_mkfs = false
osd_memory_target = 1073741824
bluestore_cache_autotune = false
bluestore_cache_size = 268435456

[client]
# tcp_nodelay: without it Nagle + delayed ACKs add ~44 ms to every response with a body.
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw_enable_usage_log = false
rgw_enable_ops_log = false
# radosgw starts before the OSD is up; its first reads wait for a new OSD map, which the
# client only asks for again on its tick (every 5 s by default).
objecter_tick_interval = 0.2
EOF
}

# Monitor store with a one-monitor map. mkfs insists on a keyring (with a mon. key) even
# with auth off; ceph-authtool makes one.
make_mon() {
    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" >>"$DIR/log/mkfs.out" 2>&1
}

# Bluestore mkfs needs no monitor (--no-mon-config; the fsid comes from the conf), so it
# runs while the monitor starts.
make_osd() {
    ceph-osd -c "$CONF" --no-mon-config --mkfs -i 0 --osd-uuid "$OSD_UUID" \
        >>"$DIR/log/mkfs.out" 2>&1
}

# Send monitor commands (JSON, one per line on stdin) in one librados session: one `ceph`
# CLI call per command would cost ~0.3 s of Python start-up each.
mon_commands() {
    $SYSPY -c '
import sys
import rados

cluster = rados.Rados(conffile=sys.argv[1])
cluster.connect(timeout=30)
for line in sys.stdin:
    ret, out, err = cluster.mon_command(line, b"")
    if ret != 0:
        sys.exit("mon command %s failed (%d): %s" % (line.strip(), ret, err))
cluster.shutdown()
' "$CONF"
}

# OSD 0 must be known to the monitor before it boots.
register_osd() {
    echo '{"prefix": "osd new", "uuid": "'"$OSD_UUID"'", "id": 0}' | mon_commands
}

create_pools() {
    local pool
    for pool in "${POOLS[@]}"; do
        echo '{"prefix": "osd pool create", "pool": "'"$pool"'", "pg_num": 8, "pgp_num": 8}'
        echo '{"prefix": "osd pool application enable", "pool": "'"$pool"'", "app": "rgw"}'
    done | mon_commands
}

# radosgw-admin prints the user (with its secret key) or the zone as JSON: not kept.
rgw_admin() {
    radosgw-admin -c "$CONF" "$@" >/dev/null 2>>"$DIR/log/radosgw-admin.out"
}

# The S3 user and the zone's storage classes, before radosgw starts: radosgw reads the zone
# only at start. The first call (user create) also creates the default zonegroup and zone,
# which `placement add` needs, and waits for the OSD to come up.
setup_rgw() {
    local class
    rgw_admin user create --uid=pys3fs-test --display-name="pys3fs tests" \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY"
    for class in "${STORAGE_CLASSES[@]}"; do
        rgw_admin zonegroup placement add --rgw-zonegroup=default \
            --placement-id=default-placement --storage-class="$class"
        rgw_admin zone placement add --rgw-zone=default --placement-id=default-placement \
            --storage-class="$class" --data-pool=default.rgw.buckets.data
    done
}

# Wait until radosgw answers an HTTP request on the port (bash's /dev/tcp: no curl needed).
wait_s3() {
    local deadline=$((SECONDS + TIMEOUT)) status
    while [ $SECONDS -lt $deadline ]; do
        check_alive
        status=$(
            exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$RGW_PORT" || exit 0
            printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
            read -r -t 5 line <&3 && echo "$line"
        ) || true
        case "$status" in HTTP/1.?\ 200*) return 0 ;; esac
        sleep 0.1
    done
    die "no S3 answer on 127.0.0.1:$RGW_PORT after ${TIMEOUT}s"
}

# --- commands ---------------------------------------------------------------------------

cmd_start() {
    [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && die "$DIR exists and is not empty"
    ensure_packages
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd) # absolute: it goes into the conf
    CONF="$DIR/ceph.conf"
    mkdir -p "$DIR"/{log,pids,run,crash,mon,osd,rgw}

    FSID=$(cat /proc/sys/kernel/random/uuid)
    OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
    RGW_PORT=${PORT:-$(free_port)}
    MON_PORT=$(free_port)
    while [ "$MON_PORT" = "$RGW_PORT" ]; do MON_PORT=$(free_port); done
    echo "$RGW_PORT" >"$DIR/port"

    trap on_start_failure EXIT
    write_conf
    make_mon
    spawn mon.a ceph-mon -c "$CONF" -i a -f
    make_osd
    register_osd
    spawn osd.0 ceph-osd -c "$CONF" -i 0 -f
    create_pools
    setup_rgw
    spawn client.rgw radosgw -c "$CONF" -n client.rgw -f
    wait_s3
    trap - EXIT
    echo "http://127.0.0.1:$RGW_PORT"
}

cmd_stop() {
    [ -e "$DIR" ] || return 0
    # Refuse to rm -rf a directory this script did not make.
    if [ ! -f "$DIR/ceph.conf" ] && [ -n "$(ls -A "$DIR")" ]; then
        die "$DIR has no ceph.conf: not removing it"
    fi
    DIR=$(cd "$DIR" && pwd)
    CONF="$DIR/ceph.conf"
    kill_daemons
    rm -rf "$DIR"
}

[ $# -ge 2 ] || usage
COMMAND=$1
DIR=$2
PORT=${3:-}
[[ "$PORT" =~ ^[0-9]*$ ]] || usage
ACCESS_KEY=${CEPH_RGW_ACCESS_KEY:-pys3fs-test-access}
SECRET_KEY=${CEPH_RGW_SECRET_KEY:-pys3fs-test-secret-do-not-log}
DISK_SIZE=${CEPH_RGW_DISK_SIZE:-16G}
TIMEOUT=${CEPH_RGW_TIMEOUT:-120}

case "$COMMAND" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    *) usage ;;
esac
