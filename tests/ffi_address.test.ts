// addressOf: the native address of a view's first byte, which the channel writes into
// iovecs. It must alias the view's bytes (byteOffset included) and stay valid across
// garbage collections — also for small typed arrays, which the engines may first keep
// in their moving GC heap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { addressOf, Errno, native, viewOf } from "../ffi/mod.ts";
import { InvalidArgumentError } from "../src/errors.ts";
import { pageRanges, PageScan, Ranges } from "../src/multifd/packet.ts";
import type { RegionDescriptor } from "../src/region.ts";
import { collectGarbage } from "../dev/runtime.ts";
import { unheldAddresses } from "../dev/address_lifetime.ts";
import { ROOT } from "../dev/root.ts";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Young-generation churn around full collections, so that movable objects do move. */
function churn(): void {
  for (let round = 0; round < 3; round++) {
    let keep: Uint8Array[] = [];
    for (let i = 0; i < 20_000; i++) keep.push(new Uint8Array(16 + (i % 48)));
    collectGarbage();
    keep = [];
  }
}

test("addressOf aliases the view's bytes, small and large, at any byteOffset, across GC", () => {
  // Addresses first: nothing here may touch `.buffer` before addressOf does.
  const typed = [new Uint8Array(8), new Uint8Array(40).subarray(3, 29), new Uint8Array(64 * 1024).subarray(4103)];
  const words = new Uint32Array(5);
  const addresses = [...typed.map((view) => addressOf(view)), addressOf(words)];
  const views = [...typed, new Uint8Array(words.buffer)];
  churn();
  views.forEach((view, n) => {
    assert.equal(addressOf(view), addresses[n], `view ${n}: the address changed after a collection`);
    const native = viewOf(addresses[n], view.length);
    for (let i = 0; i < view.length; i++) view[i] = (i * 7 + n) & 0xff;
    assert.deepEqual(native, view, `view ${n}: the address does not alias the view's bytes`);
    native.fill(0xa5);
    assert.ok(view.every((b) => b === 0xa5), `view ${n}: writes through the address are not seen by the view`);
  });
});

test("addressOf of views over one buffer differ by their byteOffset", () => {
  const buffer = new ArrayBuffer(4096);
  const base = addressOf(new Uint8Array(buffer));
  for (const offset of [1, 100, 4095]) {
    assert.equal(addressOf(new Uint8Array(buffer, offset)), base + offset); // held: compared, never read
  }
});

// Addresses and sizes cross the FFI as doubles (ffi/symbols.ts `address`); the native side
// takes only whole numbers in [0, 2^53] and refuses the rest before touching memory.
test("an address or size that is not a whole number below 2^53 is refused: -EINVAL, and a typed error above", () => {
  const page = new Uint8Array(4096);
  const address = addressOf(page);
  const offsets = new Float64Array([0]);
  for (const bad of [0.5, -4096, NaN, Infinity, 2 ** 53 + 2]) {
    assert.equal(native.zc_prefault(bad, 4096, 1), -Errno.EINVAL, `zc_prefault(${bad})`);
    assert.equal(
      native.zc_zero_pages(address, bad, 4096, offsets, 1, 0, -1),
      -Errno.EINVAL,
      `zc_zero_pages size ${bad}`,
    );
  }
  page.fill(7);
  const region = { address: address + 0.5, size: 4096 } as RegionDescriptor;
  assert.throws(() => new PageScan(region, 4096).zeroFill(offsets, 0, 1), InvalidArgumentError);
  assert.throws(() => pageRanges(region, 4096, offsets, 1, new Ranges()), InvalidArgumentError);
  assert.ok(page.every((b) => b === 7), "a refused call wrote nothing");
  // The same calls with whole numbers work: the checks refuse only what they should.
  assert.equal(native.zc_zero_pages(address, 4096, 4096, offsets, 1, 0, -1), 0);
  assert.ok(page.every((b) => b === 0));
});

// The rule beside addressOf (ffi/mod.ts): an address keeps nothing alive, so memory a native
// call reads must be referenced after the call. dev/address_lifetime.ts checks the source.
const BUGGY = `export function combine(tags: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(tags.length * 32);
  tags.forEach((t, i) => all.set(t, i * 32));
  const tag = mac(algorithm, all.length === 0 ? 0 : addressOf(all), all.length, key);
  return tag;
}`;

test("the address-lifetime check flags the region checksum's old bug and passes its fix", () => {
  // The shape of combineBlockHashes before 1a68440: a local whose address a call reads, dead after it.
  assert.deepEqual(unheldAddresses(BUGGY), [{ line: 4, local: "all" }]);
  assert.deepEqual(unheldAddresses(BUGGY.replace("return tag;", "keepAlive(all);\n  return tag;")), []);
  assert.deepEqual(unheldAddresses(BUGGY.replace("  return tag;", "  return all.subarray(0, 1) && tag;")), []);
  assert.deepEqual(unheldAddresses(BUGGY.replace("addressOf(all),", "addressOf(all), // held: elsewhere\n")), []);
  // Fields and captured variables are held by their owners; a parameter by its caller.
  assert.deepEqual(unheldAddresses(BUGGY.replace("addressOf(all)", "addressOf(this.all)")), []);
  assert.deepEqual(unheldAddresses(`function f(all: Uint8Array) { return mac(addressOf(all)); }`), []);
  assert.deepEqual(
    unheldAddresses(`function f() { const b = new Uint8Array(8); return () => read(addressOf(b)); }`),
    [],
  );
});

test("no addressOf in the repository takes the address of a local that nothing references afterwards", () => {
  const sources = ["ffi", "src", "examples", "bench", "dev", "util", "tests"].flatMap((dir) =>
    readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".ts"))
      .map((file) => join(dir, file))
  );
  assert.ok(sources.length > 50, `found ${sources.length} files`);
  const unheld = sources.flatMap((file) =>
    unheldAddresses(readFileSync(join(ROOT, file), "utf8")).map(({ line, local }) => `${file}:${line} (${local})`)
  );
  assert.deepEqual(
    unheld,
    [],
    "keep each referenced after the native call (keepAlive), or say what holds it (// held:)",
  );
});
