#!/usr/bin/env bash
# A one-node Ceph cluster for tests and demos (docs/rbd.md).
#
#   scripts/ceph-cluster.sh start DIR   # monitor, manager, one memstore OSD, pool "rbd"
#   scripts/ceph-cluster.sh stop DIR    # ends every daemon of DIR; leaves DIR
#   scripts/ceph-cluster.sh status DIR  # "running" (exit 0) or "stopped" (exit 1)
#
# Loopback only, on ports chosen free at start (several clusters coexist),
# no authentication (auth ... required = none). Clients use DIR/ceph.conf:
#   rbd -c DIR/ceph.conf create --size 64M rbd/disk
# A memstore OSD keeps its data in memory: everything is gone at stop. Size
# OSD_MEMSTORE_BYTES (default 2 GiB) well above what a test writes: a full
# memstore makes later writes block forever rather than fail.
#
# Every ceph CLI call runs under `timeout`: without a manager some wait
# forever. Facts and pitfalls: ../shared/reference/ceph-one-node.md.
set -euo pipefail

CLI_TIMEOUT=${CEPH_CLI_TIMEOUT:-20}
START_TIMEOUT=${CEPH_START_TIMEOUT:-60}
MEMSTORE_BYTES=${OSD_MEMSTORE_BYTES:-$((2 << 30))}

die() {
  echo "ceph-cluster.sh: $*" >&2
  exit 1
}
usage() { die "usage: $0 start|stop|status DIR"; }

(($# == 2)) || usage
cmd=$1
dir=$2
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"

# A port nobody listens on now: the kernel picks it (bind to port 0).
free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ceph_cli() { timeout "$CLI_TIMEOUT" ceph -c "$dir/ceph.conf" "$@"; }

# A process is gone when it has no /proc entry or is a zombie: PID 1 here
# reaps slowly, so a killed daemon lingers as a zombie for seconds.
alive() {
  local pid=$1 state
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# Stops the daemon whose pid file is DIR/NAME.pid: SIGTERM, then SIGKILL
# after `grace` seconds.
stop_daemon() {
  local name=$1 grace=$2 pidfile="$dir/$1.pid" pid i
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if [[ -n $pid ]] && alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 20; i++)); do
      alive "$pid" || break
      sleep 0.05
    done
    if alive "$pid"; then
      echo "ceph-cluster.sh: $name (pid $pid) ignored SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.05
      done
    fi
  fi
  rm -f "$pidfile"
}

do_stop() {
  [[ -d $dir ]] || return 0
  # The OSD before the monitor: an OSD without its monitor waits 5 s to go.
  stop_daemon osd.0 10
  stop_daemon mgr.x 10
  stop_daemon mon.a 10
}

do_status() {
  local n
  for n in mon.a mgr.x osd.0; do
    if [[ ! -f $dir/$n.pid ]] || ! alive "$(cat "$dir/$n.pid")"; then
      echo stopped
      return 1
    fi
  done
  echo running
}

# Runs a daemon in the foreground (-f) in the background, so that its pid is
# ours to record and to signal; its output goes to DIR/log/NAME.out.
spawn() {
  local name=$1
  shift
  "$@" -f -c "$dir/ceph.conf" >>"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/$name.pid"
}

do_start() {
  command -v ceph-mon >/dev/null || die "ceph-mon is not installed (scripts/deps.sh installs it)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/mon.a.pid ]] && alive "$(cat "$dir/mon.a.pid")"; then
    die "a cluster already runs in $dir (stop it first)"
  fi
  rm -rf "$dir/mon" "$dir/osd" "$dir/mgr" "$dir/log" "$dir/run"
  mkdir -p "$dir/mon" "$dir/osd" "$dir/mgr" "$dir/log" "$dir/run"
  local port_v2 port_v1 fsid
  port_v2=$(free_port)
  port_v1=$(free_port)
  [[ $port_v1 != "$port_v2" ]] || port_v1=$(free_port)
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port_v2,v1:127.0.0.1:$port_v1]
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.\$pid.asok
keyring = $dir/keyring
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon warn on insecure global id reclaim = false

[mon]
mon data = $dir/mon/\$id
mon cluster log file = $dir/log/cluster.log

[mgr]
mgr data = $dir/mgr/\$id
mgr disabled modules = dashboard

[osd]
osd data = $dir/osd/\$id
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd journal size = 0
osd max object name len = 256
osd max object namespace len = 64
EOF
  cat >"$dir/keyring" <<EOF
# auth none: no secret is checked; kept so that tools that insist on a
# keyring find one.
EOF
  local t0=$SECONDS
  # Any failure from here on ends what was started.
  trap 'rc=$?; if ((rc)); then do_stop; fi' EXIT

  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port_v2,v1:127.0.0.1:$port_v1]" \
    "$dir/monmap" >/dev/null
  ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" >>"$dir/log/mon.a.out" 2>&1 ||
    die "ceph-mon --mkfs failed (see $dir/log/mon.a.out)"
  spawn mon.a ceph-mon -i a
  wait_for "the monitor" ceph_cli mon stat

  mkdir -p "$dir/mgr/x"
  spawn mgr.x ceph-mgr -i x

  local id
  id=$(ceph_cli osd create) || die "ceph osd create failed"
  [[ $id == 0 ]] || die "ceph osd create gave id $id, not 0"
  mkdir -p "$dir/osd/0"
  ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs >>"$dir/log/osd.0.out" 2>&1 ||
    die "ceph-osd --mkfs failed (see $dir/log/osd.0.out)"
  spawn osd.0 ceph-osd -i 0
  wait_for "the OSD to come up" osd_up

  ceph_cli osd pool create rbd 8 >/dev/null 2>&1 || die "ceph osd pool create rbd failed"
  # HEALTH_OK can come before placement groups are active: the pool is
  # usable once `rbd pool init` succeeds.
  wait_for "pool rbd" timeout "$CLI_TIMEOUT" rbd -c "$dir/ceph.conf" pool init rbd
  trap - EXIT
  echo "ceph-cluster.sh: cluster up in $((SECONDS - t0)) s: -c $dir/ceph.conf (mon 127.0.0.1:$port_v2)" >&2
}

osd_up() { ceph_cli osd dump 2>/dev/null | grep -q '^osd.0 up'; }

# wait_for WHAT CMD...: retries CMD until it succeeds or START_TIMEOUT passes;
# fails if a daemon died meanwhile.
wait_for() {
  local what=$1 deadline=$((SECONDS + START_TIMEOUT)) n
  shift
  until "$@" >/dev/null 2>&1; do
    for n in mon.a mgr.x osd.0; do
      if [[ -f $dir/$n.pid ]] && ! alive "$(cat "$dir/$n.pid")"; then
        tail -n 20 "$dir/log/$n.out" >&2 || true
        die "$n exited while waiting for $what (see $dir/log/)"
      fi
    done
    ((SECONDS < deadline)) || die "timed out after ${START_TIMEOUT}s waiting for $what (see $dir/log/)"
    sleep 0.2
  done
}

case $cmd in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) usage ;;
esac
