#!/usr/bin/env bash
# Runs every test under both runtimes: `bun test` and `deno test` on the same files.
# Usage: npm test [-- FILTER]   (FILTER: a substring of test file names, e.g. "channel")
#
# A hang fails the run instead of stalling it. Bun: --timeout per test, and the whole bun
# run within ZCMF_BUN_LIMIT_S. Deno has no per-test limit for these files (it ignores
# node:test's `timeout` on describe), so each file runs on its own within ZCMF_FILE_LIMIT_S.
# A limit kills everything the runtime started (test peers too).
# In CI (env CI set) a skipped or ignored test fails the run: every precondition holds there.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
filter=${1:-}
files=$(ls tests/*.test.ts | grep -F -- "$filter" || true)
[ -n "$files" ] || { echo "no test files match '$filter'" >&2; exit 2; }
bun_limit_s=${ZCMF_BUN_LIMIT_S:-1800}
file_limit_s=${ZCMF_FILE_LIMIT_S:-600}
case "${CI:-}" in "" | 0 | false) ci=false ;; *) ci=true ;; esac

out=$(mktemp)
running=""
trap 'rm -f "$out"' EXIT
# Interrupted: stop the limited command's whole process group, then leave.
trap 'if [ -n "$running" ]; then kill -TERM -- "-$running" "$running" 2>/dev/null; wait "$running"; fi; exit 130' INT TERM HUP

# Runs "$@" within $1 seconds, showing its output as it comes; the output is also in $out.
# `timeout` puts the command in a process group of its own and kills that group when the
# time is up. Returns the command's status (124: timed out; 137: killed after ignoring TERM).
run_limited() {
  local seconds=$1
  shift
  : >"$out"
  timeout --kill-after=30 "$seconds" "$@" >"$out" 2>&1 &
  running=$!
  tail -s 0.2 -n +1 -f --pid="$running" "$out" &
  local shower=$!
  wait "$running"
  local rc=$?
  running=""
  wait "$shower"
  return $rc
}

timed_out() { [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; }

# $out without ANSI colours.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$out"; }

# Bun's closing counts (" 12 pass", " 0 fail", " 1 skip"): the number before `word`, or 0.
bun_count() { plain | grep -E "^ *[0-9]+ $1\$" | tail -n 1 | tr -dc 0-9 | grep . || echo 0; }

# Deno's summary line ("ok | 1 passed (7 steps) | 0 failed | 2 ignored (3 steps) (56s)") as
# six numbers: passed, steps passed, failed, steps failed, ignored, steps ignored.
deno_counts() {
  plain | grep -E '^(ok|FAILED) \|' | tail -n 1 | awk '
    function tests(word) { if (match($0, "[0-9]+ " word)) return substr($0, RSTART, RLENGTH) + 0; return 0 }
    function steps(word,   s) {
      if (!match($0, word " \\([0-9]+ step")) return 0
      s = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", s); return s + 0
    }
    END { print tests("passed"), steps("passed"), tests("failed"), steps("failed"), tests("ignored"), steps("ignored") }'
}

status=0
echo "== bun test =="
# shellcheck disable=SC2086
run_limited "$bun_limit_s" "$bin/bun" test --timeout 300000 $(printf './%s ' $files)
rc=$?
[ $rc -eq 0 ] || status=1
bun_pass=$(bun_count pass)
bun_fail=$(bun_count fail)
bun_skip=$(bun_count skip)
# The failed tests by name, repeated in the summary: a CI log is often read from its end.
bun_failed=$(plain | grep -E '^\(fail\) ' || true)
bun_line="bun:  $bun_pass pass | $bun_fail fail | $bun_skip skip"
if timed_out $rc; then bun_line="$bun_line | TIMED OUT after $bun_limit_s s (ZCMF_BUN_LIMIT_S)"; fi

echo "== deno test =="
# Totals over the files: tests, steps (node:test's tests inside a describe) passed, failed, ignored.
totals=(0 0 0 0 0 0)
deno_files=0
deno_timed_out=""
deno_no_result=""
deno_skipped=""
deno_failed=""
for file in $files; do
  # --no-check: every Worker would be type-checked again at start-up (seconds each);
  # types are checked once by `deno check` (npm run check, CI).
  run_limited "$file_limit_s" "$bin/deno" test -A --no-check --v8-flags=--expose-gc "$file"
  rc=$?
  if [ $rc -ne 0 ]; then
    status=1
    # Deno's FAILURES section lists each failed test as "name => file:line:column".
    deno_failed="$deno_failed
deno test $file failed (exit $rc)$(plain | sed -n '/^ *FAILURES *$/,$p' | grep -F ' => ' | sed 's/^/\n  /')"
  fi
  if timed_out $rc; then
    echo "deno test $file: TIMED OUT after $file_limit_s s (ZCMF_FILE_LIMIT_S)" >&2
    deno_timed_out="$deno_timed_out $file"
  fi
  if ! plain | grep -qE '^(ok|FAILED) \|'; then
    deno_no_result="$deno_no_result $file" # crashed or timed out: counted as one failed test
    totals[2]=$((totals[2] + 1))
  fi
  read -r -a counts <<<"$(deno_counts)"
  for i in 0 1 2 3 4 5; do totals[i]=$((totals[i] + ${counts[i]:-0})); done
  [ $((counts[4] + counts[5])) -eq 0 ] || deno_skipped="$deno_skipped $file"
  deno_files=$((deno_files + 1))
done
deno_ignored=$((totals[4] + totals[5]))
deno_line="deno: $deno_files files | ${totals[0]} passed (${totals[1]} steps) | ${totals[2]} failed (${totals[3]} steps)"
deno_line="$deno_line | ${totals[4]} ignored (${totals[5]} steps)"
[ -z "$deno_timed_out" ] || deno_line="$deno_line | TIMED OUT:$deno_timed_out"
[ -z "$deno_no_result" ] || deno_line="$deno_line | no result from:$deno_no_result"

if $ci && [ $((bun_skip + deno_ignored)) -gt 0 ]; then
  echo "CI: tests were skipped (deno:${deno_skipped:- none}; bun: $bun_skip); in CI every test must run" >&2
  status=1
fi

echo "== summary =="
echo "$bun_line"
echo "$deno_line"
[ -z "$bun_failed" ] || printf 'bun failed:\n%s\n' "$bun_failed"
[ -z "$deno_failed" ] || printf '%s\n' "${deno_failed#?}"
if [ $status -eq 0 ]; then echo "all tests passed under bun and deno"; else echo "TESTS FAILED" >&2; fi
# Last, one line in the plain "N passed, N failed" form, both runtimes together (deno: its
# steps, the node:test tests inside each describe, as bun counts them).
echo "total: $((bun_pass + totals[1])) passed, $((bun_fail + totals[2] + totals[3])) failed"
exit $status
