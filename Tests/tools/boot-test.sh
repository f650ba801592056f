#!/usr/bin/env bash
# A real boot test: systemd as PID 1 in private PID and mount namespaces, on an overlay of the
# host's root (every write lands in a tmpfs: the host is not touched), with refreshd installed
# from a staged `make install`. Checks: the unit reaches active (running) through READY=1,
# `refreshctl status` answers, `systemctl reload` works, `systemctl stop` ends it cleanly.
# Usage: boot-test.sh STAGE_DIR     exit 0 pass, 1 fail, 77 cannot run here (says why)
set -uo pipefail
stage="$(cd "$1" && pwd)"
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (namespaces, overlayfs, pivot_root)"
[ -x /lib/systemd/systemd ] || skip "systemd is not installed (apt-get install systemd)"
command -v unshare >/dev/null && command -v nsenter >/dev/null || skip "unshare/nsenter missing (util-linux)"
work="$(mktemp -d /var/tmp/refreshd-boot.XXXXXX)"
log="$work.log"
cleanup() {
    [ -n "${init:-}" ] && kill -9 "$init" 2>/dev/null
    [ -n "${outer:-}" ] && wait "$outer" 2>/dev/null
    rmdir "$work" 2>/dev/null
}
trap cleanup EXIT

unshare --fork --pid --mount --propagation private -- bash -s "$work" "$stage" > "$log" 2>&1 <<'INNER' &
set -e
work=$1 stage=$2
mount -t tmpfs tmpfs "$work"
mkdir -p "$work/upper" "$work/work" "$work/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root" || { echo "OVERLAY-FAILED"; exit 77; }
root="$work/root"
# The host's own refreshd state (a host where refreshd ever ran as root has a ledger, a spool and a
# configuration) must neither be read nor written: hidden in the overlay (whiteouts in the tmpfs).
rm -rf "$root/var/lib/refreshd" "$root/var/lib/private/refreshd" "$root/var/spool/refreshd" "$root/etc/refreshd" "$root/run/refreshd"
cp -a "$stage/." "$root/"
mkdir -p "$root/etc/refreshd"
echo "SG.fake-boot-test-key-not-real" > "$root/etc/refreshd/sendgrid-api-key"
chmod 0600 "$root/etc/refreshd/sendgrid-api-key"
# Never a request to the real SendGrid: dry-run, and a closed loopback port as the base URL.
printf 'dry_run = true\n[sendgrid]\nbase_url = "http://127.0.0.1:9"\n' > "$root/etc/refreshd/refreshd.toml"
cat > "$root/etc/systemd/system/refreshd-boot.target" <<TARGET
[Unit]
Description=refreshd boot test
Requires=basic.target refreshd.service
After=basic.target refreshd.service
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
exec /lib/systemd/systemd --system --unit=refreshd-boot.target --log-target=console
INNER
outer=$!
# systemd is the unshare process's child.
for _ in $(seq 100); do init="$(pgrep -P "$outer" | head -n 1)"; [ -n "$init" ] && break; sleep 0.1; done
[ -n "${init:-}" ] || { cat "$log"; skip "could not start systemd in a new PID namespace"; }
in_ns() { nsenter -t "$init" -m -p -- "$@"; }
state=""
for _ in $(seq 300); do
    grep -q "OVERLAY-FAILED\|PIVOT-FAILED" "$log" && { cat "$log"; skip "overlayfs or pivot_root is not available here"; }
    state="$(in_ns systemctl is-active refreshd.service 2>/dev/null)"
    [ "$state" = active ] || [ "$state" = failed ] && break
    sleep 0.2
done
echo "refreshd.service: $state"
if [ "$state" != active ]; then
    in_ns systemctl status refreshd.service --no-pager 2>&1 | tail -n 30
    in_ns journalctl -u refreshd --no-pager 2>&1 | tail -n 30
    grep -qi "cgroup\|Failed to mount" "$log" && { tail -n 20 "$log"; skip "systemd cannot manage cgroups here"; }
    exit 1
fi
fail=0
in_ns systemctl show refreshd.service -p Type -p ActiveState -p SubState -p StatusText -p NRestarts -p WatchdogUSec --no-pager
[ "$(in_ns systemctl show refreshd.service -p SubState --value)" = running ] || { echo "FAIL: not running"; fail=1; }
echo "--- refreshctl status"
in_ns /usr/bin/refreshctl status --socket /run/refreshd/refreshd.sock || { echo "FAIL: refreshctl status"; fail=1; }
echo "--- systemctl reload"
in_ns systemctl reload refreshd.service || { echo "FAIL: reload"; fail=1; }
sleep 1
[ "$(in_ns systemctl is-active refreshd.service)" = active ] || { echo "FAIL: not active after reload"; fail=1; }
echo "--- systemctl stop"
in_ns systemctl stop refreshd.service
result="$(in_ns systemctl show refreshd.service -p Result --value)"
status="$(in_ns systemctl show refreshd.service -p ExecMainStatus --value)"
echo "stopped: Result=$result ExecMainStatus=$status"
[ "$result" = success ] || { echo "FAIL: stop result $result"; fail=1; }
echo "--- journal"
in_ns journalctl -u refreshd --no-pager -o cat 2>/dev/null | tail -n 12
exit $fail
