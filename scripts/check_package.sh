#!/usr/bin/env bash
# Packs the module (prepack builds prebuilt/linux-x64/), unpacks it into a temp folder
# without zig-out/, and runs the stream example from there under both runtimes: proof
# that the package works for users without Zig.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=$(npm pack --silent --pack-destination "$tmp" | tail -n 1)
tar -xzf "$tmp/$tarball" -C "$tmp"
for lib in libzerocopy_multifd.so libzerocopy_multifd_x86_64_v3.so; do
  test -f "$tmp/package/prebuilt/linux-x64/$lib" || { echo "prebuilt $lib missing from the package" >&2; exit 1; }
done
test ! -e "$tmp/package/zig-out" || { echo "zig-out must not be packed" >&2; exit 1; }
"$root/node_modules/.bin/deno" run -A "$tmp/package/examples/zerocopy_stream.ts" --gib 0.05 --json
"$root/node_modules/.bin/bun" "$tmp/package/examples/zerocopy_stream.ts" --gib 0.05 --json
echo "package OK: $tarball"
