#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this (Debian/Ubuntu) machine, for CI and the SLURM tests.
# Adapted from the team's tested recipe (../shared/slurm): installs what is missing, writes
# /etc/slurm/slurm.conf for this one node, starts munged, slurmctld and slurmd, waits until the node is
# idle and records "name pid" lines in $SLURM_STATE_DIR/pids so stop.sh stops exactly those processes.
# Needs root (apt-get, daemons). Idempotent: a second call with live daemons does nothing.
set -euo pipefail
DIR=${SLURM_STATE_DIR:-/tmp/slurm-local}
PIDS=$DIR/pids
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
alive() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

if [ -s "$PIDS" ]; then
  ok=1; while read -r n p; do alive "$p" && [ "$(cat "/proc/$p/comm")" = "$n" ] || ok=0; done < "$PIDS"
  if [ $ok = 1 ] && sinfo -h -N -o %t 2>/dev/null | grep -qx idle; then echo "slurm already running"; exit 0; fi
  # A previous CI run died without its trap: stop what is left of it (by recorded PIDs) and start over.
  echo "stale $PIDS: stopping the recorded daemons first"
  bash "$HERE/stop.sh"
fi

# A SLURM cluster this script did not start (a developer's or a real one): use it, never rewrite its config.
if command -v sinfo >/dev/null && sinfo -h -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
  echo "a SLURM cluster is already answering (not started by this script): using it as it is"; exit 0
fi

# 1. install. Another apt-get may be running (e.g. `make browser` in parallel): wait for its lock
#    instead of failing. policy-rc.d / no systemd means postinst cannot start the services; fine.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. munge key, dirs, config
if [ ! -s /etc/munge/munge.key ]; then mungekey --create --keyfile=/etc/munge/munge.key; fi
chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge   # not created without systemd
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
H=$(hostname -s)
NODE=$(slurmd -C | head -n1)   # "NodeName=<host> CPUs=.. RealMemory=.." with this machine's real values
cat > /etc/slurm/slurm.conf.tmp <<CONF
ClusterName=ci
SlurmctldHost=${H}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# batch_sched_delay=0: start jobs at once; requeue tests need a requeued job to start again quickly.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# Keep finished jobs visible to scontrol for 5 min (tests read final states from it).
MinJobAge=300
${NODE} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mv /etc/slurm/slurm.conf.tmp /etc/slurm/slurm.conf

# 3. start daemons (each forks into the background and writes a pid file)
waitpid_file() { for _ in $(seq 100); do [ -s "$1" ] && alive "$(cat "$1")" && { cat "$1"; return; }; sleep 0.1; done
                 echo "no live pid in $1" >&2; exit 1; }
: > "$PIDS.tmp"; T0=$(date +%s%N)
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "munged already running (not started by us, will not be stopped)"
else
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  p=$(waitpid_file /run/munge/munged.pid); echo "munged $p" >> "$PIDS.tmp"
fi
rm -f /run/slurmctld.pid /run/slurmd.pid
slurmctld -c            # -c: do not recover jobs of an earlier run (job ids keep counting up)
p=$(waitpid_file /run/slurmctld.pid); echo "slurmctld $p" >> "$PIDS.tmp"
slurmd
p=$(waitpid_file /run/slurmd.pid); echo "slurmd $p" >> "$PIDS.tmp"
mv "$PIDS.tmp" "$PIDS"

# 4. wait until the node is idle (resume it if it stays DOWN/DRAINED for > 5 s)
st=
for i in $(seq 120); do
  st=$(sinfo -h -N -o %t 2>/dev/null || true)
  [ "$st" = idle ] && break
  case "$st" in down*|drain*|drng*) [ "$i" -gt 10 ] && scontrol update nodename="$H" state=resume || true;; esac
  sleep 0.5
done
[ "$st" = idle ] || { echo "node not idle: '$st'" >&2; sinfo -R >&2; tail -n 20 /var/log/slurm/*.log >&2; exit 1; }
echo "slurm node idle $(( ($(date +%s%N) - T0) / 1000000 )) ms after starting daemons"; sinfo
