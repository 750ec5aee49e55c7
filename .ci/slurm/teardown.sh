#!/usr/bin/env bash
# Stop the one-node CI cluster started by .ci/slurm/setup.sh (slurmd, slurmctld, munged).
# Leaves packages, config and state in place, so setup.sh restarts it in a few seconds.
# Jobs still running are cancelled first. Safe to run when nothing is running.
set -uo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "teardown.sh: must run as root" >&2
    exit 1
fi

stop() {  # stop PIDFILE NAME: signal the process named in PIDFILE if it really is NAME, wait
    local pid i
    pid=$(cat "$1" 2>/dev/null) || return 0
    if [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$2" ]]; then
        echo "[slurm-teardown] stopping $2 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            [[ -d /proc/$pid ]] || break
            sleep 0.2
        done
        if [[ -d /proc/$pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$1"
}

if command -v scancel >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
    scancel --partition=debug 2>/dev/null || true
fi
stop /run/slurm/slurmd.pid slurmd
stop /run/slurm/slurmctld.pid slurmctld
stop /run/munge/munged.pid munged
echo "[slurm-teardown] done"
