#!/usr/bin/env bash
# CI/tests: bring up a single-node Slurm cluster on this machine (Debian 12, no systemd needed),
# idempotently. Installs slurm-wlm and munge if missing, creates a munge key, starts munged,
# writes /etc/slurm/slurm.conf for this host (one node = `hostname -s`, partition `debug`),
# starts slurmctld and slurmd, and waits until the node is idle. A second run finds everything
# up and exits 0 at once. There is no accounting (no slurmdbd): `sacct` is disabled; read job
# states with `squeue` / `scontrol show job ID` (finished jobs stay visible for MinJobAge
# seconds) or from the job-completion log /var/log/slurm/jobcomp.log.
# Environment: SLURM_UP_TIMEOUT (seconds to wait for the node, default 60), SLURM_UP_CRED_EXPIRE
# (job credential lifetime = delay before a requeued job restarts, default 10 s; Slurm's is 120).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  exec sudo -n -E "$0" "$@"
fi

log() { echo "slurm-up: $*"; }
die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }
running() { pgrep -x "$1" >/dev/null 2>&1; }

timeout_s="${SLURM_UP_TIMEOUT:-60}"
cred_expire="${SLURM_UP_CRED_EXPIRE:-10}"
node="$(hostname -s)"
conf_dir=/etc/slurm
log_dir=/var/log/slurm

# --- 1. packages -------------------------------------------------------------------------------
if ! command -v sbatch >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' maintainer scripts from starting services (no config exists yet);
  # this script starts the daemons itself.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 0755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  pkgs=(slurm-wlm munge)
  log "installing ${pkgs[*]}"
  if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  fi
  if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; trap - EXIT; fi
fi

# --- 2. munge ----------------------------------------------------------------------------------
munge_user=root
getent passwd munge >/dev/null && munge_user=munge
install -d -m 0700 -o "$munge_user" -g "$munge_user" /etc/munge /var/lib/munge /var/log/munge
install -d -m 0755 -o "$munge_user" -g "$munge_user" /run/munge
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
  log "creating munge key $key"
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$key" --force
  else
    dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
  fi
fi
chown "$munge_user:$munge_user" "$key"
chmod 0400 "$key"

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! running munged; then
  log "starting munged (as $munge_user)"
  if [ "$munge_user" = root ]; then
    munged --force
  else
    runuser -u "$munge_user" -- munged --force
  fi
fi
for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
if ! munge_ok; then
  tail -n 20 /var/log/munge/munged.log >&2 2>/dev/null || true
  die "munge does not work (munge -n | unmunge failed)"
fi

# --- 3. configuration --------------------------------------------------------------------------
install -d -m 0755 "$conf_dir" "$log_dir" /var/spool/slurmctld /var/spool/slurmd

# `slurmd -C` prints this machine's NodeName line (CPUs, sockets, cores, threads, RealMemory).
node_line="$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=' || true)"
if [ -z "$node_line" ]; then
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
  node_line="NodeName=$node CPUs=$(nproc) RealMemory=$mem_mb"
fi
# Name the node by the short hostname, and leave ~5 % memory headroom so that the node is not
# drained with "Low RealMemory" when the reported total shifts slightly.
node_line="$(awk -v n="$node" '{
  for (i = 1; i <= NF; i++) {
    if ($i ~ /^NodeName=/) $i = "NodeName=" n
    if ($i ~ /^RealMemory=/) { split($i, a, "="); $i = "RealMemory=" int(a[2] * 0.95) }
  }
  print }' <<<"$node_line") State=UNKNOWN"

new_conf="$(mktemp)"
trap 'rm -f "$new_conf"' EXIT
cat >"$new_conf" <<EOF
# Written by .ci/slurm-up.sh: single-node Slurm for tests and CI. Do not edit by hand.
ClusterName=ci
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No accounting storage (no slurmdbd), so sacct is disabled; finished jobs stay visible to
# squeue/scontrol for MinJobAge seconds, and their final state is appended to the jobcomp log.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$log_dir/jobcomp.log
MinJobAge=3600
# Short timeouts for quick tests. cred_expire (default 120 s) is also how long a requeued job
# waits before it may start again.
AuthInfo=cred_expire=$cred_expire
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
$node_line
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

changed=0
if ! cmp -s "$new_conf" "$conf_dir/slurm.conf"; then
  if [ -e "$conf_dir/slurm.conf" ] && ! grep -q '^# Written by .ci/slurm-up.sh' "$conf_dir/slurm.conf"; then
    backup="$conf_dir/slurm.conf.bak.$(date +%s)"
    cp -p "$conf_dir/slurm.conf" "$backup"
    log "saved the existing slurm.conf as $backup"
  fi
  install -m 0644 "$new_conf" "$conf_dir/slurm.conf"
  changed=1
  log "wrote $conf_dir/slurm.conf"
fi

# --- 4. daemons --------------------------------------------------------------------------------
stop_daemon() {  # NAME: stop a running daemon (by its pid file, else its pids) and wait
  local name=$1 pids
  pids="$(cat "/run/$name.pid" 2>/dev/null || true) $(pgrep -x "$name" || true)"
  for pid in $pids; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 100); do running "$name" || return 0; sleep 0.2; done
  die "$name did not stop"
}
if [ "$changed" -eq 1 ] && { running slurmctld || running slurmd; }; then
  log "configuration changed: restarting slurmd and slurmctld"
  stop_daemon slurmd
  stop_daemon slurmctld
fi

show_logs() {
  for f in "$log_dir/slurmctld.log" "$log_dir/slurmd.log"; do
    [ -e "$f" ] && { echo "--- tail $f" >&2; tail -n 25 "$f" >&2; }
  done
}
if ! running slurmctld; then
  log "starting slurmctld"
  slurmctld || { show_logs; die "slurmctld failed to start"; }
fi
if ! running slurmd; then
  log "starting slurmd"
  slurmd || { show_logs; die "slurmd failed to start"; }
fi

# Wait until the node is usable; resume it if it comes up down or drained.
deadline=$(( SECONDS + timeout_s ))
last_resume=-100
state=""
while :; do
  state="$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1 || true)"
  case "$state" in
    idle|mixed|allocated|completing|planned) break ;;
    down|drained|draining|fail|failing|down\*|drained\*)
      if [ $(( SECONDS - last_resume )) -ge 5 ]; then
        log "node $node is $state: resuming it"
        scontrol update nodename="$node" state=resume 2>/dev/null || true
        last_resume=$SECONDS
      fi ;;
  esac
  for d in slurmctld slurmd; do
    running "$d" || { show_logs; die "$d is not running"; }
  done
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "slurm-up: node $node not ready after ${timeout_s}s (state: ${state:-none})" >&2
    sinfo -N -l >&2 2>&1 || true
    sinfo -R >&2 2>&1 || true
    scontrol show node "$node" >&2 2>&1 || true
    show_logs
    exit 1
  fi
  sleep 1
done

cpus="$(sinfo -h -N -n "$node" -o %c 2>/dev/null | head -n1)"
log "ready (node $node, ${cpus:-?} cpus, partition debug)"
