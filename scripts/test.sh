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
"$bin/bun" test $(printf './%s ' $files) || status=1
echo "== deno test =="
# shellcheck disable=SC2086
"$bin/deno" test -A --v8-flags=--expose-gc $files || status=1

if [ $status -eq 0 ]; then echo "all tests passed under bun and deno"; else echo "TESTS FAILED" >&2; fi
exit $status
