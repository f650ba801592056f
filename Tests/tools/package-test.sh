#!/usr/bin/env bash
# The package on a host without the Swift toolchain: systemd as PID 1 on an overlay of the host's
# root (systemd-root.sh) with /opt/swift hidden, then, inside, as an operator would:
#   apt install ./refreshd_OLD.deb        not started (no key yet), says how
#   key + edited config, systemctl start  active through READY=1; refreshctl status answers
#   a job dropped in the spool            sent to the fake SendGrid
#   man refreshctl, bash completion       render; America/Sant<TAB> offers America/Santiago
#   a job waiting (not_before), then apt install ./refreshd_NEW.deb
#                                         config edit kept, ledger kept, restarted, job still
#                                         queued, then sent (the caller counts it: exactly once)
#   apt remove                            ledger and spool kept
#   apt purge                             user, group, ledger, spool and /etc/refreshd gone
# Usage: package-test.sh OLD.deb NEW.deb FAKE_BASE_URL FAKE_API_KEY SEGMENT_1 SEGMENT_2
#        exit 0 pass, 1 fail, 77 cannot run here (says why)
set -uo pipefail
old_deb="$(realpath "$1")" new_deb="$(realpath "$2")" base_url="$3" api_key="$4" segment1="$5" segment2="$6"
. "$(dirname "$0")/systemd-root.sh"
systemd_root_checks
command -v apt-get >/dev/null || skip "apt-get is missing"
work="$(mktemp -d /var/tmp/refreshd-package.XXXXXX)"
log="$work.log"
trap systemd_root_cleanup EXIT
fail=0
check() { if "$@"; then :; else echo "FAIL: $*"; fail=1; fi; }

# The toolchain (and anything installed from this tree before) is hidden; the packages are copied in.
systemd_root_up basic.target basic.target "$(cat <<PREPARE
rm -rf "\$root/opt/swift" "\$root/usr/bin/refreshd" "\$root/usr/bin/refreshctl" "\$root/lib/systemd/system/refreshd.service" \
    "\$root/usr/lib/systemd/system/refreshd.service"
# A fresh host has no policy-rc.d (build containers install one that forbids starting services).
rm -f "\$root/usr/sbin/policy-rc.d"
# Nor dpkg settings of minimal images that leave manual pages out.
grep -l "path-exclude.*/usr/share/man" "\$root"/etc/dpkg/dpkg.cfg.d/* 2>/dev/null | xargs -r rm -f
mkdir -p "\$root/root/packages"
cp "$old_deb" "$new_deb" "\$root/root/packages/"
PREPARE
)"
[ "$state" = active ] || { systemd_root_diagnose; systemd_root_no_cgroups && skip "systemd cannot manage cgroups here"; echo "FAIL: no boot"; exit 1; }
sh_in() { in_ns bash -c "$1"; }

echo "--- no toolchain"
if sh_in 'command -v swift || command -v swiftc || test -e /opt/swift || ldconfig -p | grep -q libswiftCore'; then
    echo "FAIL: a Swift toolchain is visible"; fail=1
else
    echo "no swift, no swiftc, no /opt/swift, no libswiftCore in the linker cache"
fi

echo "--- apt install $(basename "$old_deb")"
sh_in "DEBIAN_FRONTEND=noninteractive apt-get install -y /root/packages/$(basename "$old_deb") 2>&1" | tail -n 4
check sh_in 'dpkg-query -W -f="\${Status}\n" refreshd | grep -q "install ok installed"'
check sh_in 'systemctl is-enabled refreshd.service | grep -qx enabled'
echo "active without a key: $(in_ns systemctl is-active refreshd.service)"
echo "installed binaries: $(in_ns ldd /usr/bin/refreshd | grep -c 'libswift\|libFoundation') Swift libraries linked"
echo "refreshctl --version: $(in_ns refreshctl --version)"
echo "user: $(in_ns getent passwd refreshd | cut -d: -f1,6)"
echo "incoming: $(in_ns stat -c '%a %U:%G' /var/spool/refreshd/incoming)"
echo "config: $(in_ns stat -c '%a %U:%G' /etc/refreshd/refreshd.toml)"

echo "--- key, config, start"
sh_in "umask 077; printf '%s\n' '$api_key' > /etc/refreshd/sendgrid-api-key"
# As an operator edits the shipped file: a key set under its [sendgrid] table.
sh_in "sed -i 's|^\\[sendgrid\\]\$|[sendgrid]\\n# edited by the package test\\nbase_url = \"$base_url\"|' /etc/refreshd/refreshd.toml"
sh_in 'grep -A2 "^\[sendgrid\]" /etc/refreshd/refreshd.toml'
check sh_in 'refreshd check-config >/dev/null'
in_ns systemctl start refreshd.service
state="$(wait_for_unit refreshd.service)"
echo "refreshd.service: $state"
if [ "$state" != active ]; then
    in_ns journalctl -u refreshd --no-pager -o cat 2>&1 | tail -n 20
    exit 1
fi
in_ns systemctl show refreshd.service -p Type -p SubState -p StatusText --no-pager
in_ns journalctl -u refreshd --no-pager -o cat | grep -v "thread priority" | tail -n 5
echo "--- refreshctl status"
in_ns refreshctl status || { echo "FAIL: refreshctl status"; fail=1; }

drop() { # drop ZONE SEGMENT NAME [EXTRA_JSON]
    sh_in "cd /var/spool/refreshd/incoming && printf '{\"segment_id\": \"$2\", \"user_time_zone\": \"$1\"${4:-}}' > .$3.tmp && mv .$3.tmp $3.json"
}
job_state() { in_ns refreshctl jobs --segment "$1" --json | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"]; print(j[0]["state"] if j else "none", j[0]["id"] if j else "")'; }
wait_state() { # wait_state SEGMENT STATE SECONDS
    local s
    for _ in $(seq $(( $3 * 5 ))); do s="$(job_state "$1")"; [ "${s%% *}" = "$2" ] && break; sleep 0.2; done
    echo "$s"
}

echo "--- a job through the spool"
drop America/Chicago "$segment1" first
echo "job 1: $(wait_state "$segment1" sent 30)"

echo "--- man refreshctl"
sh_in 'MANWIDTH=80 man refreshctl 2>&1 | head -n 6'
check sh_in 'MANWIDTH=80 man refreshctl 2>/dev/null | grep -q "Inspect and steer refreshd"'
check sh_in 'MANWIDTH=80 man 5 refreshd.toml 2>/dev/null | grep -q "segment_interval_seconds"'
check sh_in 'MANWIDTH=80 man 8 refreshd 2>/dev/null | grep -q "check-config"'

echo "--- bash completion"
completion="$(in_ns bash -ic '
    . /usr/share/bash-completion/bash_completion
    _completion_loader refreshctl
    COMP_LINE="refreshctl calendar --time-zone America/Sant"; COMP_POINT=${#COMP_LINE}
    COMP_WORDS=(refreshctl calendar --time-zone America/Sant); COMP_CWORD=3
    _refreshctl refreshctl America/Sant --time-zone
    printf "completion: %s\n" "${COMPREPLY[@]}"' 2>/dev/null)"
echo "$completion"

echo "--- upgrade with a job waiting"
not_before="$(date -u -d '+45 seconds' +%Y-%m-%dT%H:%M:%SZ)"
drop Europe/Paris "$segment2" waiting ", \"not_before\": \"$not_before\""
echo "job 2 before: $(wait_state "$segment2" queued 10)"
pid_before="$(in_ns systemctl show refreshd.service -p MainPID --value)"
sh_in "DEBIAN_FRONTEND=noninteractive apt-get install -y /root/packages/$(basename "$new_deb") 2>&1" | tail -n 3
echo "version after: $(in_ns dpkg-query -W -f='${Version}' refreshd)"
state="$(wait_for_unit refreshd.service)"
pid_after="$(in_ns systemctl show refreshd.service -p MainPID --value)"
echo "after upgrade: $state, restarted: $([ "$pid_before" != "$pid_after" ] && echo yes || echo no)"
echo "config kept: $(in_ns grep -c 'edited by the package test' /etc/refreshd/refreshd.toml)"
echo "job 1 after: $(job_state "$segment1")"
echo "job 2 after: $(job_state "$segment2")"
echo "job 2 then: $(wait_state "$segment2" sent 90)"

echo "--- apt remove"
sh_in 'DEBIAN_FRONTEND=noninteractive apt-get remove -y refreshd 2>&1' | tail -n 2
echo "removed: binary $(in_ns test -e /usr/bin/refreshd && echo present || echo gone), ledger $(in_ns test -e /var/lib/refreshd/ledger.sqlite && echo kept || echo gone), spool $(in_ns test -d /var/spool/refreshd/incoming && echo kept || echo gone), active $(in_ns systemctl is-active refreshd.service)"

echo "--- apt purge"
sh_in 'DEBIAN_FRONTEND=noninteractive apt-get purge -y refreshd 2>&1' | tail -n 2
echo "purged: user $(in_ns getent passwd refreshd >/dev/null && echo present || echo gone), group $(in_ns getent group refreshd >/dev/null && echo present || echo gone), ledger $(in_ns test -e /var/lib/refreshd && echo present || echo gone), spool $(in_ns test -e /var/spool/refreshd && echo present || echo gone), config $(in_ns test -e /etc/refreshd && echo present || echo gone)"
exit $fail
