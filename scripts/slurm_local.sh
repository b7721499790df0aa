#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests of the submitit sweep launcher
# (job arrays, requeue on timeout or preemption, dependencies between arrays). Run it as root.
#
#   bash scripts/slurm_local.sh start    # install if needed, start munged + slurmctld + slurmd, wait for the node
#   bash scripts/slurm_local.sh start --optional   # the same, but where it cannot (not root, no apt),
#                                        # say why and exit 0: the tests that need SLURM then skip
#   bash scripts/slurm_local.sh status   # sinfo and squeue; exit 0 when the node is up, 1 otherwise
#   bash scripts/slurm_local.sh stop     # stop the slurmd, slurmctld and munged that this script started
#   bash scripts/slurm_local.sh -h       # this help
#
# start installs the Debian packages slurm-wlm and munge with apt-get when sbatch, slurmctld,
# slurmd or munged is missing (the only network use), creates a munge key if there is none,
# writes /etc/slurm/slurm.conf (the path Debian's slurm 22.05 reads; a foreign one is backed up
# once to slurm.conf.moegs-backup) and starts the daemons as root. The node is the host itself
# (`hostname -s`, at 127.0.0.1) with its CPU count and about 95% of its memory, in one
# partition `debug` (default, no time limit). No cgroups and no accounting: sacct does not
# work, so submitit reports job states as UNKNOWN and learns that a job ended from its result
# file. start is idempotent: on a healthy cluster it only reports. A job array may have up to
# 10001 tasks; requeue is allowed for every job (JobRequeue=1).
#
# Environment:
#   MOEGS_SLURM_DIR   state folder: job state, spool, logs, pid files (default: /tmp/moegs-slurm)
#   MOEGS_SLURM_WAIT  seconds that start waits for the node to be idle (default: 60)
set -euo pipefail

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() { printf '[slurm-local] ERROR: %s\n' "$*" >&2; exit 1; }

state_dir="${MOEGS_SLURM_DIR:-/tmp/moegs-slurm}"
wait_s="${MOEGS_SLURM_WAIT:-60}"
conf=/etc/slurm/slurm.conf
marker="# Written by moegs-bench scripts/slurm_local.sh"
run_dir="$state_dir/run"
log_dir="$state_dir/log"
export PATH="$PATH:/usr/sbin:/sbin"

# ---- helpers -------------------------------------------------------------------------------

# pid_alive FILE: the pid in FILE names a live process
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# node_state: the node's state as sinfo prints it (idle, mixed, down*, ...), empty if none
node_state() { timeout 10 sinfo -h -o %T 2>/dev/null | head -n 1 || true; }

node_up() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# describe: one line on the daemons and the node, for messages
describe() {
    printf 'slurmctld %s, slurmd %s, node %s: %s' \
        "$(pid_alive "$run_dir/slurmctld.pid" && echo running || echo stopped)" \
        "$(pid_alive "$run_dir/slurmd.pid" && echo running || echo stopped)" \
        "$(hostname -s)" "$(node_state || true)"
}

healthy() {
    pid_alive "$run_dir/slurmctld.pid" && pid_alive "$run_dir/slurmd.pid" && node_up
}

show_logs() {
    local f
    for f in "$log_dir/slurmctld.log" "$log_dir/slurmd.log" "$log_dir/munged.log"; do
        [[ -f $f ]] || continue
        printf '\n===== tail -n 30 %s =====\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
}

# stop_pid NAME FILE: SIGTERM the pid in FILE, SIGKILL after 15 s, remove FILE
stop_pid() {
    local name=$1 file=$2 pid i
    if ! pid_alive "$file"; then
        rm -f "$file"
        return 0
    fi
    pid="$(cat "$file")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

# ---- start ---------------------------------------------------------------------------------

install_packages() {
    local missing=() cmd
    for cmd in sbatch srun sinfo scontrol slurmctld slurmd munged mungekey; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root to install slurm-wlm and munge"
    log "missing ${missing[*]}: apt-get install slurm-wlm munge"
    # The packages' maintainer scripts would start the daemons through invoke-rc.d before a
    # slurm.conf exists; a policy-rc.d that answers 101 stops that (Debian's Docker images ship one).
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    {
        apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
    } >&2 || rc=$?
    [[ $added_policy == 1 ]] && rm -f "$policy"
    [[ $rc == 0 ]] || die "apt-get install slurm-wlm munge failed (exit $rc)"
    for cmd in "${missing[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing slurm-wlm and munge"
    done
}

# munge_user: the user munged runs as (Debian's package creates `munge`)
munge_user() { if id munge >/dev/null 2>&1; then echo munge; else echo root; fi; }

start_munge() {
    local user key=/etc/munge/munge.key
    user="$(munge_user)"
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    chown "$user:" /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/log/munge
    chmod 0755 /run/munge
    chmod 0711 /var/lib/munge
    if [[ ! -s $key ]]; then
        log "creating the munge key $key"
        rm -f "$key"
        mungekey --create --keyfile="$key"
    fi
    chown "$user:" "$key"
    chmod 0400 "$key"
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged is already running"
        return 0
    fi
    log "starting munged (as $user)"
    rm -f /run/munge/munged.pid
    if [[ $user == root ]]; then
        munged --log-file="$log_dir/munged.log" --pid-file=/run/munge/munged.pid
    else
        touch "$log_dir/munged.log"
        chown "$user:" "$log_dir/munged.log"
        runuser -u "$user" -- munged --log-file="$log_dir/munged.log" --pid-file=/run/munge/munged.pid
    fi
    # munged writes its pid file after it has daemonized; keep our own copy for `stop`
    local i
    for ((i = 0; i < 20; i++)); do
        [[ -s /run/munge/munged.pid ]] && break
        sleep 0.25
    done
    [[ -s /run/munge/munged.pid ]] && cp /run/munge/munged.pid "$run_dir/munged.pid"
    munge -n | unmunge >/dev/null || { show_logs; die "munged does not answer (munge -n | unmunge)"; }
}

# render_conf: the slurm.conf for this host on stdout
render_conf() {
    local host cpus mem_mb real_mb
    host="$(hostname -s)"
    cpus="$(nproc --all)"
    mem_mb=$(($(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 1024))
    real_mb=$((mem_mb * 95 / 100))
    cat <<EOF
$marker for a single-node test cluster.
# State, spool and logs: $state_dir. Rewritten by every start when it differs.
ClusterName=moegs-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((real_mb / cpus))
SchedulerType=sched/backfill
# a pending job whose start was deferred (a requeued one) is picked up within ~5 s, not 30-60 s
SchedulerParameters=bf_interval=2,sched_interval=5
# cred_expire (default 120 s) is also how long a requeued job waits before it may start again
AuthInfo=cred_expire=10
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
MaxArraySize=10001
MaxJobCount=100000
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=30
ReturnToService=2
StateSaveLocation=$state_dir/ctld
SlurmdSpoolDir=$state_dir/spool
SlurmctldPidFile=$run_dir/slurmctld.pid
SlurmdPidFile=$run_dir/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

# write_conf: install the rendered slurm.conf; returns 0 when the file changed
write_conf() {
    local new
    new="$(render_conf)"
    if [[ -f $conf ]] && [[ "$(cat "$conf")" == "$new" ]]; then
        return 1
    fi
    mkdir -p "$(dirname "$conf")"
    if [[ -f $conf ]] && ! grep -qF "$marker" "$conf" && [[ ! -e $conf.moegs-backup ]]; then
        log "backing up the existing $conf to $conf.moegs-backup"
        cp -p "$conf" "$conf.moegs-backup"
    fi
    log "writing $conf"
    printf '%s\n' "$new" >"$conf.tmp.$$"
    chmod 644 "$conf.tmp.$$"
    mv -f "$conf.tmp.$$" "$conf"
    cp "$conf" "$state_dir/slurm.conf"
    return 0
}

wait_for_node() {
    local deadline=$((SECONDS + wait_s)) resumed=0 st
    while ((SECONDS < deadline)); do
        st="$(node_state)"
        case "$st" in
            idle | mixed | allocated | completing)
                # slurmctld keeps a node "idle" for SlurmdTimeout after its slurmd died: check both pids
                pid_alive "$run_dir/slurmctld.pid" && pid_alive "$run_dir/slurmd.pid" && return 0
                ;;
            drain* | drng | down | fail*)
                # a state saved from an earlier run (e.g. "Not responding") that slurmd's
                # registration does not clear by itself
                if [[ $resumed == 0 ]]; then
                    log "node is $st: scontrol update state=resume"
                    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        sleep 1
    done
    return 1
}

cmd_start() {
    local t0=$SECONDS
    mkdir -p "$state_dir/ctld" "$state_dir/spool" "$run_dir" "$log_dir"
    if command -v slurmctld >/dev/null 2>&1 && [[ -f $conf ]] && healthy \
        && [[ "$(cat "$conf")" == "$(render_conf)" ]]; then
        log "already running: node $(hostname -s) is $(node_state) (state folder $state_dir)"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "start must run as root"
    install_packages
    start_munge
    if write_conf; then
        # a changed config: restart the daemons that this script runs
        stop_pid slurmd "$run_dir/slurmd.pid"
        stop_pid slurmctld "$run_dir/slurmctld.pid"
    fi
    if pid_alive "$run_dir/slurmctld.pid"; then
        log "slurmctld is already running (pid $(cat "$run_dir/slurmctld.pid"))"
    else
        log "starting slurmctld"
        slurmctld || { show_logs; die "slurmctld failed to start"; }
    fi
    if pid_alive "$run_dir/slurmd.pid"; then
        log "slurmd is already running (pid $(cat "$run_dir/slurmd.pid"))"
    else
        log "starting slurmd"
        slurmd || { show_logs; die "slurmd failed to start"; }
    fi
    if ! wait_for_node; then
        log "not up after ${wait_s} s: $(describe)"
        show_logs
        exit 1
    fi
    log "up in $((SECONDS - t0)) s: node $(hostname -s) is $(node_state), partition debug (state folder $state_dir)"
}

# ---- stop / status -------------------------------------------------------------------------

cmd_stop() {
    stop_pid slurmd "$run_dir/slurmd.pid"
    stop_pid slurmctld "$run_dir/slurmctld.pid"
    if [[ -s $run_dir/munged.pid ]]; then
        # only the munged this script started (its pid copy), and only if it is still that one
        if pid_alive "$run_dir/munged.pid" && [[ -s /run/munge/munged.pid ]] \
            && [[ "$(cat /run/munge/munged.pid)" == "$(cat "$run_dir/munged.pid")" ]]; then
            stop_pid munged "$run_dir/munged.pid"
        else
            rm -f "$run_dir/munged.pid"
        fi
    fi
    log "stopped (state folder $state_dir kept; running job steps, if any, are left alone)"
}

cmd_status() {
    command -v sinfo >/dev/null 2>&1 || { log "slurm is not installed (run: start)"; return 1; }
    timeout 10 sinfo || true
    timeout 10 squeue || true
    if healthy; then
        log "up: node $(hostname -s) is $(node_state)"
        return 0
    fi
    log "down: $(describe)"
    return 1
}

case "${1:-}" in
    start)
        if [[ ${2:-} == --optional ]]; then
            (cmd_start) || log "SLURM was not started (see above); the tests that need it will be skipped"
        elif [[ -n ${2:-} ]]; then
            printf 'slurm_local.sh: unknown option for start: %s\n\n' "$2" >&2
            usage >&2
            exit 2
        else
            cmd_start
        fi
        ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help) usage ;;
    *)
        printf 'slurm_local.sh: unknown or missing command: %s\n\n' "${1:-}" >&2
        usage >&2
        exit 2
        ;;
esac
