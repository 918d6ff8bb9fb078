#!/usr/bin/env bash
# Host prerequisites that only root can take away: with /dev/fuse closed to
# users on purpose, rfake (run as the unprivileged test user) must fail with
# exit 69 and a message that names the fix; `rfake doctor` must report the
# problem. The change is undone on exit. Called by tests/run.sh as root.
# (Disabled user namespaces are tested without root, in tests/bad_input.rs.)
#   tests/host-prereqs.sh RFAKE_BIN IMAGE USER
set -uo pipefail
rfake=$1 image=$2 user=$3
passed=0 failed=0

fuse_mode=$(stat -c %a /dev/fuse)
restore() { chmod "$fuse_mode" /dev/fuse; }
trap restore EXIT

as_user() { (cd /tmp && runuser -u "$user" -- env -i PATH=/usr/bin:/bin "$@"); }

# check NAME WANT_STATUS WANT_TEXT CMD...
check() {
  local name=$1 want_status=$2 want_text=$3
  shift 3
  local out status
  out=$(as_user "$@" 2>&1)
  status=$?
  if [ "$status" = "$want_status" ] && grep -qF -- "$want_text" <<<"$out"; then
    echo "test $name ... ok"
    passed=$((passed + 1))
  else
    echo "test $name ... FAILED (status $status, want $want_status and '$want_text'): $out"
    failed=$((failed + 1))
  fi
}

chmod 0600 /dev/fuse
check dev_fuse_not_open_to_users 69 "chmod 0666 /dev/fuse" "$rfake" exec "$image" true
check dev_fuse_names_the_device 69 "cannot open /dev/fuse: Permission denied" "$rfake" exec "$image" true
check doctor_reports_dev_fuse 69 "PROBLEM  /dev/fuse" "$rfake" doctor
chmod "$fuse_mode" /dev/fuse

check doctor_ok_again 0 "ok       /dev/fuse" "$rfake" doctor

echo "test result: $([ "$failed" = 0 ] && echo ok || echo FAILED). $passed passed; $failed failed"
[ "$failed" = 0 ]
