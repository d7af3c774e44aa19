#!/usr/bin/env bash
# The whole test suite with the machine clock moved (Debian's faketime, an LD_PRELOAD library: it moves the clock
# of Python, of the bundled broker and of every process they start). The verdict of `make test` must not depend
# on the date or the time zone; this is how that is shown. One suite run per shift, in order:
#
#   +1d, +100d, +400d                      the wall clock shifted forward
#   @2026-12-31 23:59:59 in UTC+08:00      the last second of a quarter on a clock in China (TZ=Asia/Shanghai)
#   @2027-01-01 07:59:59 in UTC+08:00      the last second of a UTC quarter, seen from UTC+08:00
#
# Absolute starts use FAKETIME_DONT_RESET=1, so a child process continues its parent's clock instead of starting
# again at the given second. Prometheus and Alertmanager are Go programs that read the clock without libc: faketime
# does not move them, so the tests that talk to them take every query time from Prometheus itself.
#
# Usage: scripts/clock-shifts.sh [SHIFT ...]     (default: all of the above); logs in build/clock-shifts/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=build/clock-shifts
mkdir -p "$out"
command -v faketime >/dev/null || { echo "faketime is missing: make debs" >&2; exit 2; }

shifts=("$@")
[ ${#shifts[@]} -gt 0 ] || shifts=("+1d" "+100d" "+400d" "@2026-12-31 23:59:59" "@2027-01-01 07:59:59")

status=0
for shift in "${shifts[@]}"; do
  name=$(echo "$shift" | tr -c 'A-Za-z0-9+-' '_')
  env=()
  case "$shift" in
    @*) env=(TZ=Asia/Shanghai FAKETIME_DONT_RESET=1) ;;
  esac
  echo "== clock $shift ${env[*]:-} =="
  started=$(date +%s)
  env "${env[@]}" faketime -f "$shift" bash -c "date; $PY scripts/audit_deps.py --offline | tail -1 && \
      $PY -m pytest -q -n 3 --dist loadgroup" > "$out/$name.log" 2>&1
  rc=$?
  echo "   exit $rc after $(( $(date +%s) - started )) s: $(tail -1 "$out/$name.log")"
  [ $rc -eq 0 ] || status=1
done
exit $status
