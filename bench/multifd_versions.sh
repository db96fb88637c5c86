#!/usr/bin/env bash
# In-memory multifd (bench/multifd_peer.ts: 2 MiB pages, prefaulted, random data, default
# options), two versions of this repository interleaved round by round (A B, B A, A B…:
# each goes first in half the rounds; only ratios inside a round compare on this VM).
# Prints one JSON line per round and the median of the ratios B/A (GB/s, and each side's
# CPU over the round). Each checkout builds and loads its own native library (with this
# checkout's Zig).
#
#   bash bench/multifd_versions.sh REV_A REV_B [ROUNDS=5] [RUNTIME=deno] [CHANNELS=4] [ZEROCOPY=0|1] [SIZE_MIB=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
rev_a=$1 rev_b=$2 rounds=${3:-5} runtime=${4:-deno} channels=${5:-4} zerocopy=${6:-0} size_mib=${7:-1024}
root=$(pwd)
trees=$(mktemp -d)
cleanup() {
  for t in a b; do git worktree remove --force "$trees/$t" >/dev/null 2>&1 || true; done
  rm -rf "$trees"
}
trap cleanup EXIT
for t in a b; do
  git worktree add -q --detach "$trees/$t" "$([ $t = a ] && echo "$rev_a" || echo "$rev_b")"
  ln -s "$root/node_modules" "$trees/$t/node_modules"
done
# The pinned Zig of this checkout (scripts/build_native.mjs installed it in .zig/venv, or it is on PATH).
zig_dir=$(dirname "$(ls "$root"/.zig/venv/lib/python3*/site-packages/ziglang/zig 2>/dev/null | head -1)")
for t in a b; do (cd "$trees/$t" && PATH="$zig_dir:$PATH" node scripts/build_native.mjs >/dev/null); done
BENCH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BENCH_SECRET
if [ "$runtime" = deno ]; then run=("$root/node_modules/.bin/deno" run -A); else run=("$root/node_modules/.bin/bun"); fi
flags=(--channels "$channels" --huge)
[ "$zerocopy" = 1 ] && flags+=(--zerocopy)
size=$((size_mib << 20))

# One transfer with tree $1: prints its GB/s and the receiver's and the sender's CPU seconds over the round.
transfer() {
  local tree=$1 out
  out=$(mktemp)
  export ZEROCOPY_MULTIFD_LIB="$tree/zig-out/lib/libzerocopy_multifd.so"
  "${run[@]}" "$tree/bench/multifd_peer.ts" recv --size "$size" --huge >"$out" 2>/dev/null &
  local receiver=$!
  for _ in $(seq 1 200); do grep -q '"port"' "$out" && break; sleep 0.1; done
  local port pid
  port=$(grep -o '"port":[0-9]*' "$out" | head -1 | cut -d: -f2)
  pid=$(grep -o '"pid":[0-9]*' "$out" | head -1 | cut -d: -f2)
  "${run[@]}" "$tree/bench/multifd_peer.ts" send --port "$port" --size "$size" --peer-pid "$pid" "${flags[@]}" \
    2>/dev/null | python3 -c 'import json, sys
for line in sys.stdin:
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if "GBps" in r:
        print(r["GBps"], r.get("peerCpuSeconds", 0), r.get("cpuSeconds", 0))
        break'

  wait "$receiver" || true
  rm -f "$out"
}

ratios=()
cpu_ratios=()
sender_cpu_ratios=()
for round in $(seq 1 "$rounds"); do
  # A first in odd rounds, B first in even ones: the order inside a round then favours neither.
  if [ $((round % 2)) = 1 ]; then
    read -r a cpu_a sender_a <<<"$(transfer "$trees/a")"
    read -r b cpu_b sender_b <<<"$(transfer "$trees/b")"
  else
    read -r b cpu_b sender_b <<<"$(transfer "$trees/b")"
    read -r a cpu_a sender_a <<<"$(transfer "$trees/a")"
  fi
  ratio=$(python3 -c "print(round($b / $a, 3))")
  cpu_ratio=$(python3 -c "print(round($cpu_b / $cpu_a, 3) if $cpu_a else 0)")
  sender_cpu_ratio=$(python3 -c "print(round($sender_b / $sender_a, 3) if $sender_a else 0)")
  ratios+=("$ratio")
  cpu_ratios+=("$cpu_ratio")
  sender_cpu_ratios+=("$sender_cpu_ratio")
  echo "{\"round\":$round,\"runtime\":\"$runtime\",\"channels\":$channels,\"zerocopy\":$([ "$zerocopy" = 1 ] && echo true || echo false),\"a\":$a,\"b\":$b,\"ratio\":$ratio,\"receiverCpuSeconds\":{\"a\":$cpu_a,\"b\":$cpu_b},\"receiverCpuRatio\":$cpu_ratio,\"senderCpuSeconds\":{\"a\":$sender_a,\"b\":$sender_b},\"senderCpuRatio\":$sender_cpu_ratio}"
done
python3 -c "import statistics, sys; n = len(sys.argv) // 3; m = lambda k: statistics.median(map(float, sys.argv[1 + k * n:1 + (k + 1) * n])); print('{\"medianRatio\": %s, \"medianReceiverCpuRatio\": %s, \"medianSenderCpuRatio\": %s, \"rounds\": %d}' % (m(0), m(1), m(2), n))" "${ratios[@]}" "${cpu_ratios[@]}" "${sender_cpu_ratios[@]}"
