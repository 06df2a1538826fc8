#!/usr/bin/env bash
# Stop the daemons that start.sh started, by the PIDs it recorded (never by name: other SLURM or munge
# processes on the machine are not ours). Safe to call twice or when nothing was started.
set -uo pipefail
DIR=${SLURM_STATE_DIR:-/tmp/slurm-local}
PIDS=$DIR/pids
[ -s "$PIDS" ] || { echo "no $PIDS: nothing to stop"; exit 0; }
alive() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# Cancel remaining jobs so their slurmstepd/job processes end cleanly before slurmd goes.
if scancel -p debug 2>/dev/null; then
  for _ in $(seq 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
fi
for name in slurmd slurmctld munged; do           # reverse start order
  pid=$(awk -v n="$name" '$1==n {print $2}' "$PIDS")
  [ -n "$pid" ] || continue
  if alive "$pid" && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
    kill -TERM "$pid"
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && { echo "$name $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid"; }
    for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
    echo "stopped $name ($pid)"
  else
    echo "$name ($pid) not running"
  fi
done
rm -f "$PIDS"
