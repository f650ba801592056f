# Sourced by boot-test.sh and package-test.sh: systemd as PID 1 in private PID and mount
# namespaces, on an overlay of the host's root (every write lands in a tmpfs: the host is not
# touched). The host's own refreshd state is hidden in the overlay (whiteouts), so no test reads
# or writes /var/lib/refreshd, /var/spool/refreshd, /etc/refreshd or /run/refreshd.
#
#   systemd_root_boot TARGET PREPARE   boots systemd to TARGET after running the bash snippet
#                                      PREPARE with $root set (inside the new mount namespace)
#   systemd_root_up TARGET UNIT PREPARE
#                                      boots and waits for UNIT; a boot where UNIT neither comes up
#                                      nor fails is described (systemd_root_diagnose) and made once
#                                      more from scratch; sets $state (active, failed, ...)
#   in_ns COMMAND...                   runs a command inside (mount and PID namespaces)
#   skip REASON                        exit 77, saying why
#   systemd_root_no_cgroups            true when systemd said it cannot manage cgroups here
# Needs: $work (an empty directory), $log (a file for systemd's console).

skip() { echo "SKIP: $*"; exit 77; }

systemd_root_checks() {
    [ "$(id -u)" -eq 0 ] || skip "needs root (namespaces, overlayfs, pivot_root)"
    [ -x /lib/systemd/systemd ] || skip "systemd is not installed (apt-get install systemd)"
    command -v unshare >/dev/null && command -v nsenter >/dev/null || skip "unshare/nsenter missing (util-linux)"
    # One booted systemd at a time on this host: each manages the host's cgroup tree from its own
    # PID namespace, and two tests (boot, package) would otherwise boot side by side. The lock is
    # the kernel's (flock on fd 9): it goes with this script, whatever ends it.
    exec 9>/var/tmp/refreshd-systemd-root.lock
    flock 9
}

systemd_root_cleanup() {
    [ -n "${init:-}" ] && kill -9 "$init" 2>/dev/null
    [ -n "${outer:-}" ] && wait "$outer" 2>/dev/null
    rmdir "$work" 2>/dev/null
}

systemd_root_boot() {
    local target="$1" prepare="$2"
    unshare --fork --pid --mount --propagation private -- bash -s "$work" "$target" "$prepare" > "$log" 2>&1 9>&- <<'INNER' &
set -e
work=$1 target=$2 prepare=$3
mount -t tmpfs tmpfs "$work"
mkdir -p "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root" || { echo "OVERLAY-FAILED"; exit 77; }
root="$work/root"
rm -rf "$root/var/lib/refreshd" "$root/var/lib/private/refreshd" "$root/var/spool/refreshd" "$root/etc/refreshd" "$root/run/refreshd"
eval "$prepare"
cat > "$root/etc/systemd/system/test-boot.target" <<TARGET
[Unit]
Description=refreshd test boot
Requires=basic.target $target
After=basic.target $target
AllowIsolate=yes
TARGET
for d in dev proc sys run tmp; do mkdir -p "$root/$d"; done
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mkdir -p "$root/.oldroot"
cd "$root"
pivot_root . .oldroot || { echo "PIVOT-FAILED"; exit 77; }
umount -l /.oldroot
# As on a real host: / is shared, so mounts systemd makes in a child namespace (a unit's
# credentials) propagate back.
mount --make-rshared /
# Its own lines go to the journal (systemd_root_diagnose prints them); the console is the host's.
exec /lib/systemd/systemd --system --unit=test-boot.target --log-target=journal
INNER
    outer=$!
    # systemd is the unshare process's child.
    for _ in $(seq 100); do init="$(pgrep -P "$outer" | head -n 1)"; [ -n "$init" ] && break; sleep 0.1; done
    [ -n "${init:-}" ] || { cat "$log"; skip "could not start systemd in a new PID namespace"; }
}

in_ns() { nsenter -t "$init" -m -p -- "$@"; }

systemd_root_no_cgroups() {
    { cat "$log"; in_ns journalctl -b --no-pager SYSLOG_IDENTIFIER=systemd 2>/dev/null; } | grep -qi "Failed to mount\|cgroup.*\(fail\|denied\|read-only\)"
}

systemd_root_up() {
    local target="$1" unit="$2" prepare="$3" try
    for try in 1 2; do
        systemd_root_boot "$target" "$prepare"
        state="$(wait_for_unit "$unit")"
        # Active, or failed (refreshd's own failure: never retried), is an answer.
        [ "$state" = active ] || [ "$state" = failed ] && return 0
        [ "$try" = 2 ] && return 0
        echo "--- boot $try: $unit is still '$state' after the wait; what systemd was doing:"
        systemd_root_diagnose
        echo "--- booting again from scratch"
        kill -9 "$init" 2>/dev/null
        wait "$outer" 2>/dev/null
        init="" outer=""
        mkdir -p "$work"
    done
}

# What systemd was doing when a unit did not come up: the jobs still waiting, the units that
# failed, systemd's own console and the journal's last lines (a CI failure must say why).
systemd_root_diagnose() {
    echo "--- systemd: waiting jobs"
    in_ns systemctl list-jobs --no-pager 2>&1 | tail -n 20
    echo "--- systemd: failed units"
    in_ns systemctl --failed --no-pager 2>&1 | tail -n 20
    echo "--- systemd: state"
    in_ns systemctl is-system-running 2>&1
    in_ns systemctl show -p NFailedUnits -p NJobs -p SystemState --no-pager 2>&1
    echo "--- systemd: console"
    tail -n 40 "$log"
    echo "--- journal: systemd's own lines, then the last lines"
    in_ns journalctl -b --no-pager -o short-monotonic SYSLOG_IDENTIFIER=systemd 2>&1 | tail -n 30
    in_ns journalctl -b --no-pager -o short-monotonic 2>&1 | tail -n 15
    echo "--- host: load, processes, inotify instances"
    cat /proc/loadavg
    echo "processes: $(ls -d /proc/[0-9]* | wc -l); inotify instances: $(find /proc/[0-9]*/fd -lname 'anon_inode:inotify' 2>/dev/null | wc -l) of $(cat /proc/sys/fs/inotify/max_user_instances) per user"
}

# Waits until UNIT is active or failed (at most 120 s); prints and returns its state.
wait_for_unit() {
    local state=""
    for _ in $(seq 600); do
        grep -q "OVERLAY-FAILED\|PIVOT-FAILED" "$log" && { cat "$log"; skip "overlayfs or pivot_root is not available here"; }
        state="$(in_ns systemctl is-active "$1" 2>/dev/null)"
        [ "$state" = active ] || [ "$state" = failed ] && break
        sleep 0.2
    done
    echo "$state"
}
