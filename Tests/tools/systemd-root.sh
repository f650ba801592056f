# Sourced by boot-test.sh and package-test.sh: systemd as PID 1 in private PID and mount
# namespaces, on an overlay of the host's root (every write lands in a tmpfs: the host is not
# touched). The host's own refreshd state is hidden in the overlay (whiteouts), so no test reads
# or writes /var/lib/refreshd, /var/spool/refreshd, /etc/refreshd or /run/refreshd.
#
#   systemd_root_boot TARGET PREPARE   boots systemd to TARGET after running the bash snippet
#                                      PREPARE with $root set (inside the new mount namespace)
#   in_ns COMMAND...                   runs a command inside (mount and PID namespaces)
#   skip REASON                        exit 77, saying why
# Needs: $work (an empty directory), $log (a file for systemd's console).

skip() { echo "SKIP: $*"; exit 77; }

systemd_root_checks() {
    [ "$(id -u)" -eq 0 ] || skip "needs root (namespaces, overlayfs, pivot_root)"
    [ -x /lib/systemd/systemd ] || skip "systemd is not installed (apt-get install systemd)"
    command -v unshare >/dev/null && command -v nsenter >/dev/null || skip "unshare/nsenter missing (util-linux)"
}

systemd_root_cleanup() {
    [ -n "${init:-}" ] && kill -9 "$init" 2>/dev/null
    [ -n "${outer:-}" ] && wait "$outer" 2>/dev/null
    rmdir "$work" 2>/dev/null
}

systemd_root_boot() {
    local target="$1" prepare="$2"
    unshare --fork --pid --mount --propagation private -- bash -s "$work" "$target" "$prepare" > "$log" 2>&1 <<'INNER' &
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
exec /lib/systemd/systemd --system --unit=test-boot.target --log-target=console
INNER
    outer=$!
    # systemd is the unshare process's child.
    for _ in $(seq 100); do init="$(pgrep -P "$outer" | head -n 1)"; [ -n "$init" ] && break; sleep 0.1; done
    [ -n "${init:-}" ] || { cat "$log"; skip "could not start systemd in a new PID namespace"; }
}

in_ns() { nsenter -t "$init" -m -p -- "$@"; }

# Waits until UNIT is active or failed (at most 60 s); prints and returns its state.
wait_for_unit() {
    local state=""
    for _ in $(seq 300); do
        grep -q "OVERLAY-FAILED\|PIVOT-FAILED" "$log" && { cat "$log"; skip "overlayfs or pivot_root is not available here"; }
        state="$(in_ns systemctl is-active "$1" 2>/dev/null)"
        [ "$state" = active ] || [ "$state" = failed ] && break
        sleep 0.2
    done
    echo "$state"
}
