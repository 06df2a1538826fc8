#!/usr/bin/env bash
# Submit Phase 1.4 from a cluster login node, as the researchers did with their hand-written bsub scripts:
#   export IMGINAV_DATA=/path/to/layouts IMGINAV_SCRATCH=/path/to/scratch   # once per shell
#   hpc/launch_phase1_4.sh                  # LSF (default); add --dry-run to only print scripts and commands
#   hpc/launch_phase1_4.sh --backend slurm  # SLURM
# Everything else (queues, cores, memory, walltime, setup lines) is in the cluster: section of the params file.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v imginav >/dev/null || { echo "imginav is not on PATH: conda activate imginav (environment.yml) first" >&2; exit 2; }
backend=lsf
for a in "$@"; do [ "$a" = "--backend" ] && backend=; done   # the caller chose one
exec imginav run params/phase1_4.yaml ${backend:+--backend "$backend"} "$@"
