// QEMU's multifd packets and channel openings from a hostile peer: 100,000 mutations of
// valid `MultiFDPacket_t` headers and 20,000 of `MultiFDInit_t`s. Every input is either
// refused with a ProtocolError or accepted with offsets that are page-aligned pages inside
// the named RAM block (so nothing is ever written outside a block). And 100,000 headers
// after a valid one: the native receive takes a header as part of a run of data packets
// (zig/transfer.zig zc_wire_run_continues) exactly when the parser would accept it for the
// same block. The seed is printed;
// reproduce a run with ZCMF_FUZZ_SEED=<seed>.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { ProtocolError } from "../mod.ts";
import {
  encodeMultifdInit,
  encodeMultifdPacket,
  MULTIFD_PACKET_HEADER_BYTES,
  MULTIFD_PACKET_PER_PACKET_FIELDS,
  MULTIFD_PAGES_PER_PACKET,
  MultifdPacketReader,
  parseMultifdInit,
  parseMultifdPacket,
  QEMU_PAGE_SIZE,
} from "../src/qemu/wire.ts";
import { native } from "../ffi/mod.ts";
import { qemuRunRule } from "../src/qemu/qemu_codec.ts";
import { RULE_MAX_COUNT } from "../src/wire_reads.ts";
import { Rng } from "./helpers/rng.ts";

const seed = Number(process.env.ZCMF_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const BLOCKS: Record<string, number> = {
  mem: 64 * QEMU_PAGE_SIZE,
  "pc.ram": 3 * QEMU_PAGE_SIZE,
  "vga.vram": 16 * QEMU_PAGE_SIZE,
};
const BLOCK_LIST = Object.entries(BLOCKS).map(([name, size]) => ({ name, size }));

function validPacket(rng: Rng): Uint8Array {
  const names = Object.keys(BLOCKS);
  const name = names[rng.below(names.length)];
  const pages = BLOCKS[name] / QEMU_PAGE_SIZE;
  const count = rng.below(Math.min(MULTIFD_PAGES_PER_PACKET, pages) + 1);
  const offsets = Array.from({ length: count }, () => rng.below(pages) * QEMU_PAGE_SIZE);
  return encodeMultifdPacket(name, offsets, count, rng.below(1000), rng.chance(0.3));
}

function mutate(rng: Rng, message: Uint8Array): Uint8Array {
  const bytes = message.slice();
  const choice = rng.below(10);
  if (choice === 0) return bytes;
  if (choice === 1) return bytes.slice(0, rng.below(bytes.length));
  // Fields and offsets are where the meaning is: aim there more often.
  const hot = [0, 4, 8, 12, 16, 20, 32, 64, 65, 66, 320, 328, 336];
  for (let m = rng.range(1, 4); m > 0; m--) {
    const at = rng.chance(0.5) ? hot[rng.below(hot.length)] + rng.below(8) : rng.below(bytes.length);
    bytes[at] = rng.chance(0.5) ? rng.below(256) : bytes[at] ^ (1 << rng.below(8));
  }
  return bytes;
}

describe(`QEMU multifd parsers against mutated input (seed ${seed})`, () => {
  test("100,000 packets: a ProtocolError, or only aligned pages inside the named block", () => {
    const rng = new Rng(seed);
    const offsets = new Float64Array(MULTIFD_PAGES_PER_PACKET);
    let accepted = 0;
    for (let i = 0; i < 100_000; i++) {
      const input = mutate(rng, validPacket(rng));
      let header;
      try {
        header = parseMultifdPacket(input, BLOCK_LIST, offsets);
      } catch (error) {
        assert.ok(error instanceof ProtocolError, `seed ${seed} input ${i}: ${error}`);
        continue;
      }
      accepted++;
      assert.ok(header.normalPages <= MULTIFD_PAGES_PER_PACKET);
      if (header.normalPages > 0) {
        const size = BLOCKS[header.ramBlock];
        assert.ok(size !== undefined, `seed ${seed} input ${i}: block ${header.ramBlock}`);
        for (let p = 0; p < header.normalPages; p++) {
          assert.ok(
            offsets[p] % QEMU_PAGE_SIZE === 0 && offsets[p] + QEMU_PAGE_SIZE <= size,
            `seed ${seed} input ${i}`,
          );
        }
      }
    }
    assert.ok(accepted > 10_000, `only ${accepted} accepted: the mutations are not exploring`);
  });

  test("100,000 headers after a valid one: a run goes on exactly when the parser accepts it for the same block", () => {
    const rng = new Rng(seed + 2);
    const rule = qemuRunRule();
    const { from, to } = MULTIFD_PACKET_PER_PACKET_FIELDS;
    const first = new MultifdPacketReader(BLOCK_LIST);
    const next = new MultifdPacketReader(BLOCK_LIST);
    let continued = 0;
    for (let i = 0; i < 100_000; i++) {
      // A run starts at a data packet with pages and no SYNC, validated (qemu_codec.ts).
      let start;
      do start = validPacket(rng); while (start[19] === 0 || start[11] !== 0);
      first.bytes.set(start);
      first.parseFixed();
      rule[RULE_MAX_COUNT] = first.pagesAlloc;
      // The header after it: a mutation of the same packet (counts, numbers…) or of another.
      const header = new Uint8Array(MULTIFD_PACKET_HEADER_BYTES);
      header.set(mutate(rng, rng.chance(0.7) ? start : validPacket(rng)));
      const continues = native.zc_wire_run_continues(rule, first.bytes, header);
      next.bytes.set(header);
      let count = -1;
      try {
        count = next.parseFixed();
      } catch (error) {
        assert.ok(error instanceof ProtocolError, `seed ${seed} input ${i}: ${error}`);
      }
      const fixedSame = header.subarray(0, from).every((b, at) => b === first.bytes[at]) &&
        header.subarray(to, 320).every((b, at) => b === first.bytes[to + at]);
      const view = new DataView(header.buffer);
      const pages = view.getUint32(16) + view.getUint32(32);
      assert.equal(continues, fixedSame && pages >= 1 && pages <= first.pagesAlloc ? 1 : 0, `seed ${seed} input ${i}`);
      if (continues === 1) {
        continued++;
        assert.ok(count > 0 && next.block === first.block && next.flags === first.flags, `seed ${seed} input ${i}`);
      }
    }
    assert.ok(continued > 10_000, `only ${continued} headers continued a run: the mutations are not exploring`);
  });

  test("20,000 channel openings: a ProtocolError, or a channel id below the channel count", () => {
    const rng = new Rng(seed + 1);
    for (let i = 0; i < 20_000; i++) {
      const channels = rng.range(1, 8);
      const input = mutate(rng, encodeMultifdInit(rng.below(channels)));
      try {
        assert.ok(parseMultifdInit(input, channels).channelId < channels);
      } catch (error) {
        assert.ok(error instanceof ProtocolError, `seed ${seed} input ${i}: ${error}`);
      }
    }
  });
});

describe("MultifdPacketReader: one reader, packet after packet", () => {
  const blocks = [
    { name: "pc.ram", size: 8 * QEMU_PAGE_SIZE },
    { name: "pc.ram2", size: 2 * QEMU_PAGE_SIZE },
  ];

  function parse(reader: MultifdPacketReader, packet: Uint8Array, offsets: Float64Array): void {
    reader.bytes.set(packet);
    reader.parse(offsets);
  }

  test("names each block by its whole id (not a prefix), and a packet without pages names none", () => {
    const reader = new MultifdPacketReader(blocks);
    const offsets = new Float64Array(MULTIFD_PAGES_PER_PACKET);
    parse(reader, encodeMultifdPacket("pc.ram2", [QEMU_PAGE_SIZE], 1, 1, false), offsets);
    assert.deepEqual([reader.block, reader.ramBlock, reader.normalPages, offsets[0]], [
      1,
      "pc.ram2",
      1,
      QEMU_PAGE_SIZE,
    ]);
    parse(reader, encodeMultifdPacket("pc.ram", [7 * QEMU_PAGE_SIZE, 0], 2, 2 ** 40, false), offsets);
    assert.deepEqual([reader.block, reader.ramBlock, reader.packetNumber], [0, "pc.ram", 2 ** 40]);
    assert.deepEqual([...offsets.subarray(0, 2)], [7 * QEMU_PAGE_SIZE, 0]);
    parse(reader, encodeMultifdPacket("stale", [], 0, 3, true), offsets);
    assert.deepEqual([reader.block, reader.ramBlock, reader.flags & 1], [-1, "", 1]);
  });

  test("refuses an unknown block by name, a prefix of a known one, and a page outside the block it names", () => {
    const reader = new MultifdPacketReader(blocks);
    const offsets = new Float64Array(MULTIFD_PAGES_PER_PACKET);
    for (const name of ["pc.ra", "pc.ram22", "x".repeat(300)]) {
      assert.throws(
        () => parse(reader, encodeMultifdPacket(name, [0], 1, 0, false), offsets),
        (e) => e instanceof ProtocolError && e.message.includes(`unknown RAM block "${name.slice(0, 255)}"`),
      );
    }
    assert.throws(
      () => parse(reader, encodeMultifdPacket("pc.ram2", [2 * QEMU_PAGE_SIZE], 1, 0, false), offsets),
      (e) => e instanceof ProtocolError && /8192 is not a page of block "pc.ram2" \(8192 bytes\)/.test(e.message),
    );
  });
});
