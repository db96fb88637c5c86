#!/usr/bin/env bash
# Runs every test under both runtimes: `bun test` and `deno test` on the same files.
# Usage: npm test [-- FILTER]   (FILTER: a substring of test file names, e.g. "channel")
set -uo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
filter=${1:-}
files=$(ls tests/*.test.ts | grep -F -- "$filter" || true)
[ -n "$files" ] || { echo "no test files match '$filter'" >&2; exit 2; }

status=0
echo "== bun test =="
# shellcheck disable=SC2086
"$bin/bun" test --timeout 300000 $(printf './%s ' $files) || status=1
echo "== deno test =="
# shellcheck disable=SC2086
# --no-check: every Worker would be type-checked again at start-up (seconds each);
# types are checked once by `deno check` (npm run check, CI).
"$bin/deno" test -A --no-check --v8-flags=--expose-gc $files || status=1

if [ $status -eq 0 ]; then echo "all tests passed under bun and deno"; else echo "TESTS FAILED" >&2; fi
exit $status
