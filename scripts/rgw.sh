#!/usr/bin/env bash
# A throw-away Ceph RGW (S3) on 127.0.0.1 for the tests and the bench, from Debian bookworm's
# ceph packages (16.2), which scripts/install.sh installs. One monitor, one OSD and radosgw run as
# plain processes: no systemd, no containers, no cephx. Everything (config, data, logs, sockets, pid
# files) lives in one directory, so several clusters can run side by side on different ports.
#
#   scripts/rgw.sh start    starts a cluster in $RGW_DIR (wiped first) and creates an S3 user;
#                           returns once the endpoint answers (about 5 s with memstore)
#   scripts/rgw.sh stop     stops the daemons named by the pid files in $RGW_DIR, then removes it
#
# Settings (environment):
#   RGW_DIR=/tmp/obsfs-rgw        RGW_PORT=7480                 S3 endpoint http://127.0.0.1:$RGW_PORT
#   MON_PORT=3300 MON_PORT_V1=6789 (pick free ones when other clusters may run)
#   OSD_STORE=bluestore|memstore  bluestore on a sparse file (default), or all in RAM (faster start)
#   OSD_SIZE_GB=20                S3_ACCESS_KEY=AK S3_SECRET_KEY=SK   KEEP=1 (stop: keep the logs)
set -euo pipefail

RGW_DIR=${RGW_DIR:-/tmp/obsfs-rgw}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-3300}
MON_PORT_V1=${MON_PORT_V1:-6789}
OSD_STORE=${OSD_STORE:-bluestore}
OSD_SIZE_GB=${OSD_SIZE_GB:-20}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-AK}
S3_SECRET_KEY=${S3_SECRET_KEY:-SK}
CONF=$RGW_DIR/ceph.conf

say() { echo "rgw.sh: $*" >&2; }

# until_ok SECONDS WHAT CMD...: retry CMD every 0.2 s. On time-out print the logs and fail, so a
# caller stops with a reason instead of hanging on a daemon that never came up.
until_ok() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      say "$what did not come up within $1 s; logs follow ($RGW_DIR/log)"
      tail -n 15 "$RGW_DIR"/log/*.log >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

write_conf() {
  local fsid=$1 bytes=$((OSD_SIZE_GB * 1024 * 1024 * 1024))
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_PORT_V1]
public network = 127.0.0.0/8
ms bind ipv6 = false
# A local test cluster: no authentication. radosgw asks for a "secure" monitor connection by
# default, which needs cephx, so the client mode is lowered to crc.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
mon warn on insecure global id reclaim allowed = false
# One OSD holds every replica: pools of size 1, placement across OSDs rather than hosts, few PGs.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
# radosgw creates about seven pools at its first start, each one a monitor round; the default
# 1 s propose interval makes that take seconds.
paxos propose interval = 0.05
paxos min wait = 0.01
debug ms = 0
run dir = $RGW_DIR/run
admin socket = $RGW_DIR/run/\$name.asok
pid file = $RGW_DIR/run/\$name.pid
log file = $RGW_DIR/log/\$name.log
mon data = $RGW_DIR/mon/\$cluster-\$id
osd data = $RGW_DIR/osd/\$cluster-\$id
keyring = $RGW_DIR/\$name.keyring

[osd]
osd objectstore = $OSD_STORE
memstore device bytes = $bytes
bluestore block create = true
bluestore block size = $bytes
bluestore block path = $RGW_DIR/osd-block.img
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 939524096
osd op num shards = 1
osd op num threads per shard = 2

[client.rgw.s3]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $RGW_DIR/rgw
rgw enable usage log = false
rgw thread pool size = 64
# Overwritten and deleted data is freed by garbage collection, two hours later by default: a bench
# that rewrites large objects would fill the OSD first. Collect within seconds instead.
rgw gc obj min wait = 10
rgw gc processor period = 10
rgw gc processor max time = 10
EOF
}

osd_is_up() { ceph -c "$CONF" --connect-timeout 5 osd dump 2>/dev/null | grep -q '^osd\.0 up'; }

start() {
  local pkg
  for pkg in ceph-mon ceph-osd radosgw ceph-common; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || { say "Debian package $pkg is missing: run scripts/install.sh"; exit 2; }
  done
  if compgen -G "$RGW_DIR/run/*.pid" >/dev/null; then
    say "a cluster already runs in $RGW_DIR; stop it first (scripts/rgw.sh stop)"
    exit 1
  fi
  rm -rf "$RGW_DIR"
  mkdir -p "$RGW_DIR"/{run,log,mon,osd/ceph-0,rgw}
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_PORT_V1]" \
    "$RGW_DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$RGW_DIR/monmap"
  ceph-mon -c "$CONF" -i a
  until_ok 60 ceph-mon ceph -c "$CONF" --connect-timeout 5 mon stat

  local uuid id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(ceph -c "$CONF" osd new "$uuid")
  [ "$id" = 0 ] || { say "expected osd id 0 in a new cluster, got $id"; exit 1; }
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >"$RGW_DIR/log/osd-mkfs.out" 2>&1
  ceph-osd -c "$CONF" -i 0 >"$RGW_DIR/log/osd-start.out" 2>&1
  until_ok 120 ceph-osd osd_is_up

  # radosgw forks into the background only after it reached the monitor: bound that wait.
  timeout 180 radosgw -c "$CONF" -n client.rgw.s3 >"$RGW_DIR/log/rgw-start.out" 2>&1
  until_ok 120 radosgw curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/"
  radosgw-admin -c "$CONF" user create --uid obsfs-test --display-name obsfs-test \
    --access-key "$S3_ACCESS_KEY" --secret "$S3_SECRET_KEY" >"$RGW_DIR/log/user.json"
  echo "rgw.sh: S3 on http://127.0.0.1:$RGW_PORT (keys $S3_ACCESS_KEY / secret in S3_SECRET_KEY), data in $RGW_DIR"
}

# stop_daemon PIDFILE: TERM, up to 10 s to exit, then KILL.
stop_daemon() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
    local i
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop() {
  local pattern file
  # Gateway first, the monitor last: a daemon whose monitor is gone waits for it before exiting.
  for pattern in 'client.rgw.*' 'osd.*' 'mon.*'; do
    for file in "$RGW_DIR"/run/$pattern.pid; do
      [ -e "$file" ] && stop_daemon "$file"
    done
  done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$RGW_DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: scripts/rgw.sh start|stop   (settings: see the head of this script)" >&2; exit 2 ;;
esac
