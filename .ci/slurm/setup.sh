#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this Debian machine (CI or a developer's box), as root.
#
#   sudo bash .ci/slurm/setup.sh        # idempotent: safe to rerun while the cluster runs
#   sudo bash .ci/slurm/teardown.sh     # stops the daemons again
#
# What it does, in order:
#   1. apt-get installs slurm-wlm and munge (Debian packages only) unless already installed; the
#      packages' postinst scripts are kept from starting services (there is no systemd here).
#   2. writes /etc/slurm/slurm.conf for one node named `hostname -s`, with the CPUs and memory
#      that `slurmd -C` reports, one partition `debug` (Default=YES), and no cgroups, no GPUs and
#      no accounting database (see "Design" below).
#   3. makes sure a munge key exists, starts munged, slurmctld and slurmd as plain daemons
#      (restarting them only when the config changed or they are not answering),
#   4. waits until `sinfo` shows the node idle and `srun hostname` runs a job step.
#
# Design (why it is this small):
#   * No slurmdbd/MariaDB. snakemake-executor-plugin-slurm polls job states with `sacct` by default
#     but has a documented switch, `slurm-status-command: squeue` (profiles/slurm-ci sets it), which
#     is reliable as long as slurmctld keeps finished jobs for longer than 3x the plugin's first
#     status-check delay. MinJobAge below is 600 s, the CI profile's delay is a few seconds.
#     Accounts: none exist here. Do not give a `slurm_account` resource (the plugin validates it
#     with sacctmgr/sshare, which need slurmdbd, and fails). Without one, plugin 2.8.0 tries to
#     guess one with sacct, logs "Unable to guess SLURM account. Trying to proceed without." and
#     submits without -A, which is right here (its `slurm-no-account` setting is not consulted yet).
#   * Finished jobs are still recorded, without a database: JobCompType=jobcomp/filetxt appends
#     one line per finished job (JobId, JobName, JobState, NodeList...) to $JOBCOMP_LOG. The tests
#     read it to prove that jobs really ran through SLURM.
#   * No cgroups (a CI container may not delegate them): proctrack/linuxproc, task/affinity
#     (CPU binding through sched_setaffinity, so a 1-CPU job really gets one core; set
#     SLURM_CI_TASK_PLUGIN=task/none where even that is refused), jobacct_gather/none. Memory is
#     not enforced; jobs are trusted to stay within their requests.
#   * No GPUs: GresTypes=gpu with a fake gres.conf would let jobs *ask* for a GPU but they would
#     get none, which proves nothing. profiles/slurm-ci sets the `gpu` resource to 0 instead.
#
# Environment knobs: SLURM_CI_SKIP_INSTALL=1 (never call apt-get), SLURM_CI_WAIT (seconds, 60),
# SLURM_CI_TASK_PLUGIN (task/affinity).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

start_time=$(date +%s)
log() { echo "[slurm-setup $(( $(date +%s) - start_time ))s] $*"; }

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
JOBCOMP_LOG=$LOG_DIR/jobcomp.log
WAIT=${SLURM_CI_WAIT:-60}
TASK_PLUGIN=${SLURM_CI_TASK_PLUGIN:-task/affinity}
NODE=$(hostname -s)

# ---------------------------------------------------------------- 1. packages
need_install=0
for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/srun /usr/bin/sinfo \
           /usr/bin/squeue /usr/sbin/munged /usr/bin/munge; do
    [[ -x $bin ]] || need_install=1
done
if (( need_install )); then
    if [[ ${SLURM_CI_SKIP_INSTALL:-0} == 1 ]]; then
        echo "setup.sh: SLURM/munge binaries missing and SLURM_CI_SKIP_INSTALL=1" >&2
        exit 1
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' postinst from trying to start services through init scripts: there is
    # no init system here, and slurmd would fail without our slurm.conf anyway.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    trap 'if [[ $own_policy == 1 ]]; then rm -f "$policy"; fi' EXIT
    for attempt in 1 2 3; do  # a mirror hiccup should not fail CI
        if apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; then
            break
        fi
        (( attempt < 3 )) || { echo "setup.sh: apt-get failed" >&2; exit 1; }
        log "apt-get failed (attempt $attempt), retrying in 5 s"
        sleep 5
    done
    if (( own_policy )); then rm -f "$policy"; own_policy=0; fi
    log "packages installed: $(dpkg-query -W -f='${Package} ${Version}, ' slurm-wlm munge)"
else
    log "slurm-wlm and munge already installed"
fi

# ---------------------------------------------------------------- 2. config
mkdir -p "$CONF_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR" "$RUN_DIR"

# What the hardware really is, as slurmd sees it (a configured value above it drains the node).
hw=$(slurmd -C 2>/dev/null | head -1 || true)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[[ -n $cpus ]] || cpus=$(nproc)
[[ -n $mem ]] || mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
# Stay a little below what is there: free memory moves, and the machine is shared.
mem=$(( mem * 9 / 10 ))

new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by .ci/slurm/setup.sh: a one-node CI cluster. Do not edit by hand; rerun the script.
ClusterName=ccatci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true

SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups (containers may not delegate them); task/affinity binds with sched_setaffinity.
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASK_PLUGIN
JobAcctGatherType=jobacct_gather/none

# No accounting database; finished jobs go to a text file instead (read by tests/test_slurm.py).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP_LOG
# Keep finished jobs visible to 'squeue --states=all' (the CI profile's status command) for 10 min.
MinJobAge=600

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

conf_changed=0
if ! cmp -s "$new_conf" "$CONF"; then
    install -m 644 "$new_conf" "$CONF"
    conf_changed=1
    log "wrote $CONF (node $NODE, CPUs=$cpus, RealMemory=$mem MB)"
else
    log "$CONF unchanged"
fi
rm -f "$new_conf"
touch "$JOBCOMP_LOG"

# ---------------------------------------------------------------- 3. daemons
alive() {  # alive PIDFILE NAME: the pid file names a running process called NAME
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$2" ]]
}

stop() {  # stop PIDFILE NAME
    local pid i
    alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        [[ -d /proc/$pid ]] || break
        sleep 0.2
    done
    if [[ -d /proc/$pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$1"
}

# munge: Debian's postinst usually makes a key; make one if it did not.
MUNGE_KEY=/etc/munge/munge.key
if [[ ! -s $MUNGE_KEY ]]; then
    log "creating munge key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge "$MUNGE_KEY"
chmod 700 /etc/munge
chmod 400 "$MUNGE_KEY"
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge

MUNGE_PID=/run/munge/munged.pid
if alive "$MUNGE_PID" munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    stop "$MUNGE_PID" munged
    # a stale socket lock from a killed munged stops a new one from starting
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || { echo "setup.sh: munge does not work" >&2; exit 1; }
fi

CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid
if (( conf_changed )); then
    # New node or partition definitions need a restart of both (scontrol reconfigure is not
    # enough for node changes in 22.05).
    stop "$SLURMD_PID" slurmd
    stop "$CTLD_PID" slurmctld
fi

if alive "$CTLD_PID" slurmctld && scontrol ping 2>/dev/null | grep -q UP; then
    log "slurmctld already running"
else
    stop "$CTLD_PID" slurmctld
    log "starting slurmctld"
    # -c: start from a clean slate. A controller that was not running has nothing worth
    # recovering on a CI cluster, and after a hard kill its saved state can list finished jobs
    # as still running (they would hold CPUs until their time limit).
    /usr/sbin/slurmctld -c
    for _ in $(seq "$(( WAIT * 5 ))"); do
        scontrol ping 2>/dev/null | grep -q UP && break
        sleep 0.2
    done
    scontrol ping | grep -q UP || {
        echo "setup.sh: slurmctld did not come up; its log:" >&2
        tail -n 30 "$LOG_DIR/slurmctld.log" >&2
        exit 1
    }
fi

if alive "$SLURMD_PID" slurmd; then
    log "slurmd already running"
else
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# ---------------------------------------------------------------- 4. wait until usable
state=""
for _ in $(seq "$(( WAIT * 2 ))"); do
    state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1 || true)
    case $state in
        idle|mix|alloc|comp) break ;;
        down*|drain*|drng*|fail*)
            # left over from an earlier run (e.g. daemons killed): bring it back
            scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case $state in
    idle|mix|alloc|comp) log "node $NODE is $state" ;;
    *)
        echo "setup.sh: node $NODE did not become idle (state '$state')" >&2
        sinfo -N -l >&2 || true
        tail -n 30 "$LOG_DIR/slurmd.log" "$LOG_DIR/slurmctld.log" >&2 || true
        exit 1 ;;
esac

out=$(timeout "$WAIT" srun --partition=debug -N1 -n1 --mem=16 --time=1 -J setup-check hostname 2>&1) || {
    echo "setup.sh: 'srun hostname' failed: $out" >&2
    tail -n 30 "$LOG_DIR/slurmd.log" >&2 || true
    exit 1
}
log "srun hostname -> $out"
log "SLURM is up: $(sinfo -h -o '%P %a %D %t %c CPUs %m MB' | tr '\n' ' ')"
