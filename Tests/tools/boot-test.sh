#!/usr/bin/env bash
# A real boot test: systemd as PID 1 in private PID and mount namespaces, on an overlay of the
# host's root (systemd-root.sh), with refreshd installed from a staged `make install`. Checks: the
# unit reaches active (running) through READY=1, `refreshctl status` answers, `systemctl reload`
# works, `systemctl stop` ends it cleanly.
# Usage: boot-test.sh STAGE_DIR     exit 0 pass, 1 fail, 77 cannot run here (says why)
set -uo pipefail
stage="$(cd "$1" && pwd)"
. "$(dirname "$0")/systemd-root.sh"
systemd_root_checks
work="$(mktemp -d /var/tmp/refreshd-boot.XXXXXX)"
log="$work.log"
trap systemd_root_cleanup EXIT

systemd_root_up refreshd.service refreshd.service "$(cat <<PREPARE
cp -a "$stage/." "\$root/"
mkdir -p "\$root/etc/refreshd"
echo "SG.fake-boot-test-key-not-real" > "\$root/etc/refreshd/sendgrid-api-key"
chmod 0600 "\$root/etc/refreshd/sendgrid-api-key"
# Never a request to the real SendGrid: dry-run, and a closed loopback port as the base URL.
printf 'dry_run = true\n[sendgrid]\nbase_url = "http://127.0.0.1:9"\n' > "\$root/etc/refreshd/refreshd.toml"
PREPARE
)"
echo "refreshd.service: $state"
if [ "$state" != active ]; then
    in_ns systemctl status refreshd.service --no-pager 2>&1 | tail -n 30
    systemd_root_diagnose
    systemd_root_no_cgroups && skip "systemd cannot manage cgroups here"
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
