#!/usr/bin/env bash
# The CLI (examples/migrate.ts send/recv, 4 channels) on one file, two versions of this
# repository interleaved round by round (A, B, B, A, A, B…; this VM drifts by ±50% within
# minutes, so only ratios inside a round compare). Prints one JSON line per round and the
# medians of the ratios (GB/s B/A; end-to-end wall time A/B: > 1 when B is faster). Each checkout builds and loads its own native library (symbols
# change between versions), the build this CPU runs best (x86-64-v3 where it can).
#
#   bash bench/cli_versions.sh REV_A REV_B [ROUNDS=5] [FILE_DIR=/dev/shm] [RUNTIME=deno] [SIZE_MIB=1024]
#   SOURCE=warm bash bench/cli_versions.sh …   # the input read into the page cache first
#   ZERO_PERCENT=75 bash bench/cli_versions.sh … # the input's last 75% all zeros (a mostly idle guest's RAM)
#
# FILE_DIR /dev/shm: a file in memory (tmpfs); a disk directory measures the disk path
# (the page cache is dropped before each run, so the sender reads from the disk; with
# SOURCE=warm the input is then read back into it, so only the output goes to the disk). There each
# round also times the disk's own bound, a local copy of the same file under the same
# conditions: `dd bs=4M conv=fsync` (read, write and fsync on the same disk) as "disk".
set -euo pipefail
cd "$(dirname "$0")/.."
rev_a=$1 rev_b=$2 rounds=${3:-5} dir=${4:-/dev/shm} runtime=${5:-deno} size_mib=${6:-1024} source=${SOURCE:-cold}
zero_mib=$((size_mib * ${ZERO_PERCENT:-0} / 100))
root=$(pwd)
work=$(mktemp -d "$dir/zcmf-cli-versions.XXXXXX")
trees=$(mktemp -d)
cleanup() {
  rm -rf "$work"
  for t in a b; do git worktree remove --force "$trees/$t" >/dev/null 2>&1 || true; done
  rm -rf "$trees"
}
trap cleanup EXIT
for t in a b; do
  rev=$([ $t = a ] && echo "$rev_a" || echo "$rev_b")
  git worktree add -q --detach "$trees/$t" "$rev"
  ln -s "$root/node_modules" "$trees/$t/node_modules"
done
# The pinned Zig of this checkout (scripts/build_native.mjs installed it in .zig/venv, or it is on PATH).
zig_dir=$(dirname "$(ls "$root"/.zig/venv/lib/python3*/site-packages/ziglang/zig 2>/dev/null | head -1)")
for t in a b; do (cd "$trees/$t" && PATH="$zig_dir:$PATH" node scripts/build_native.mjs >/dev/null); done
unset ZEROCOPY_MULTIFD_LIB
{ head -c $(((size_mib - zero_mib) << 20)) /dev/urandom; head -c $((zero_mib << 20)) /dev/zero; } >"$work/in.bin"
key="$work/secret.key"
(umask 077 && openssl rand -hex 32 >"$key" 2>/dev/null || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key")
if [ "$runtime" = deno ]; then run=("$root/node_modules/.bin/deno" run -A); else run=("$root/node_modules/.bin/bun"); fi

# One transfer with tree $1: prints "GBps wall_seconds checksum_seconds verified allocated_bytes" (the checksum: the
# sender's phase; allocated: the output file's blocks).
transfer() {
  local tree=$1 port
  rm -f "$work/out.bin"
  sync
  echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true
  if [ "$source" = warm ]; then cat "$work/in.bin" >/dev/null; fi
  port=$((20000 + RANDOM % 20000))
  "${run[@]}" "$tree/examples/migrate.ts" recv --listen "127.0.0.1:$port" --file "$work/out.bin" \
    --secret-file "$key" --json >"$work/recv.json" 2>/dev/null &
  local receiver=$!
  sleep 1.5
  local started ended
  started=$(date +%s.%N)
  "${run[@]}" "$tree/examples/migrate.ts" send --to "127.0.0.1:$port" --file "$work/in.bin" --channels 4 \
    --secret-file "$key" --json >"$work/send.json" 2>/dev/null || true
  wait "$receiver" || true
  ended=$(date +%s.%N)
  python3 - "$work/send.json" "$work/recv.json" "$started" "$ended" "$work/out.bin" <<'PY'
import json, os, sys
send = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
recv = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
wall = round(float(sys.argv[4]) - float(sys.argv[3]), 3)
allocated = os.stat(sys.argv[5]).st_blocks * 512 if os.path.exists(sys.argv[5]) else 0
print(send.get("GBps", 0), wall, send.get("checksumSeconds", 0), str(recv.get("verified")).lower(), allocated)
PY
}

# The same file copied locally by dd (disk directories only): prints "GBps wall_seconds".
disk_copy() {
  rm -f "$work/out.bin"
  sync
  echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true
  if [ "$source" = warm ]; then cat "$work/in.bin" >/dev/null; fi
  local started ended
  started=$(date +%s.%N)
  dd if="$work/in.bin" of="$work/out.bin" bs=4M conv=fsync status=none
  ended=$(date +%s.%N)
  python3 -c "w = $ended - $started; print(round($size_mib * 2**20 / w / 1e9, 3), round(w, 3))"
}

in_memory=$(stat -f -c %T "$work")
ratios=()
wall_ratios=()
for round in $(seq 1 "$rounds"); do
  # Odd rounds A then B, even rounds B then A: on a disk the run after another one's big
  # write and delete is measurably slower, and alternating cancels that out.
  if [ $((round % 2)) = 1 ]; then
    read -r gbps_a wall_a sum_a ok_a alloc_a <<<"$(transfer "$trees/a")"
    read -r gbps_b wall_b sum_b ok_b alloc_b <<<"$(transfer "$trees/b")"
  else
    read -r gbps_b wall_b sum_b ok_b alloc_b <<<"$(transfer "$trees/b")"
    read -r gbps_a wall_a sum_a ok_a alloc_a <<<"$(transfer "$trees/a")"
  fi
  ratio=$(python3 -c "print(round($gbps_b / $gbps_a, 3) if $gbps_a else 0)")
  ratios+=("$ratio")
  # End to end (process start to verified), A over B: > 1 when B is faster.
  wall_ratio=$(python3 -c "print(round($wall_a / $wall_b, 3) if $wall_b else 0)")
  wall_ratios+=("$wall_ratio")
  disk=""
  if [ "$in_memory" != tmpfs ]; then
    read -r gbps_d wall_d <<<"$(disk_copy)"
    disk=",\"disk\":{\"GBps\":$gbps_d,\"wallSeconds\":$wall_d}"
  fi
  echo "{\"round\":$round,\"runtime\":\"$runtime\",\"dir\":\"$dir\",\"source\":\"$source\",\"zeroPercent\":${ZERO_PERCENT:-0},\"a\":{\"GBps\":$gbps_a,\"wallSeconds\":$wall_a,\"checksumSeconds\":$sum_a,\"verified\":$ok_a,\"allocatedBytes\":$alloc_a},\"b\":{\"GBps\":$gbps_b,\"wallSeconds\":$wall_b,\"checksumSeconds\":$sum_b,\"verified\":$ok_b,\"allocatedBytes\":$alloc_b},\"ratio\":$ratio,\"wallRatio\":$wall_ratio$disk}"
done
python3 -c "
import statistics, sys
n = len(sys.argv) // 2
gbps, wall = sys.argv[1:n + 1], sys.argv[n + 1:]
print('{\"medianRatio\": %s, \"medianWallRatio\": %s, \"rounds\": %d}' % (statistics.median(map(float, gbps)), statistics.median(map(float, wall)), n))
" "${ratios[@]}" "${wall_ratios[@]}"
