// QEMU's main migration channel from a hostile peer: 100,000 mutated streams (both sync
// schemes, several blocks, zero-page and page records, commands, device state) through the
// destination's parser (src/qemu/main_stream.ts), from memory. Each one either ends with a
// ProtocolError or is read whole; never another exception, never a hang, never a write
// outside a RAM block (the blocks here throw if a window leaves them), never more RAM than
// the limit. The seed is printed; reproduce with ZCMF_FUZZ_SEED=<seed>.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { ProtocolError } from "../mod.ts";
import { MAX_RAM_BLOCKS, type RamBlockTarget, readMainStream } from "../src/qemu/main_stream.ts";
import { StreamReader } from "../src/qemu/stream_reader.ts";
import { QEMU_PAGE_SIZE } from "../src/qemu/wire.ts";
import { Rng } from "./helpers/rng.ts";

const seed = Number(process.env.ZCMF_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const MAX_RAM = 64 * QEMU_PAGE_SIZE;
const PAGE = Array.from({ length: QEMU_PAGE_SIZE }, (_, i) => (i * 7) & 0xff);
const STREAMS = Number(process.env.QEMU_STREAM_FUZZ ?? 100_000);

/** Builds main-channel bytes, without the 4-byte magic the parser does not read. */
class Bytes {
  readonly out: number[] = [];
  u8(v: number) {
    this.out.push(v & 0xff);
    return this;
  }
  u16(v: number) {
    return this.u8(v >>> 8).u8(v);
  }
  u32(v: number) {
    return this.u16(v >>> 16).u16(v & 0xffff);
  }
  u64(v: number) {
    return this.u32(Math.floor(v / 2 ** 32)).u32(v >>> 0);
  }
  raw(text: string) {
    for (const c of text) this.u8(c.charCodeAt(0));
    return this;
  }
  id(text: string) {
    return this.u8(text.length).raw(text);
  }
}

function validStream(rng: Rng): { bytes: Uint8Array; fields: number[] } {
  const b = new Bytes();
  const fields: number[] = []; // where the interesting words start, for targeted mutations
  const mark = () => fields.push(b.out.length);
  const perPass = rng.chance(0.5);
  mark(), b.u32(3).u8(0x07).u32(4).raw("none"); // file version; configuration: be32 length, the machine type
  const blocks = Array.from({ length: rng.range(1, 3) }, (_, i) => ({
    name: ["mem", "pc.bios", "vga.vram"][i],
    pages: rng.range(1, 8),
  }));
  const total = blocks.reduce((sum, block) => sum + block.pages * QEMU_PAGE_SIZE, 0);
  mark(), b.u8(0x01).u32(2).id("ram").u32(0).u32(4);
  mark(), b.u64(total | 0x04);
  for (const block of blocks) mark(), b.id(block.name).u64(block.pages * QEMU_PAGE_SIZE);
  const end = () => {
    if (perPass) mark(), b.u64(0x200);
    mark(), b.u64(0x10).u8(0x7e).u32(2);
  };
  end();
  for (let part = rng.range(1, 3); part > 0; part--) {
    mark(), b.u8(0x02).u32(2);
    let last = "";
    for (let r = rng.range(0, 6); r > 0; r--) {
      const block = blocks[rng.below(blocks.length)];
      const offset = rng.below(block.pages) * QEMU_PAGE_SIZE;
      const zero = rng.chance(0.6);
      const cont = block.name === last;
      mark(), b.u64(offset | (zero ? 0x02 : 0x08) | (cont ? 0x20 : 0));
      if (!cont) b.id(block.name);
      last = block.name;
      if (zero) b.u8(0);
      else b.out.push(...PAGE);
    }
    end();
  }
  if (rng.chance(0.3)) mark(), b.u8(0x08).u16(11).u16(0);
  mark(), b.u8(0x03).u32(2);
  end();
  for (let i = rng.range(0, 40); i > 0; i--) b.u8(rng.below(256)); // device state: opaque
  return { bytes: Uint8Array.from(b.out), fields };
}

function mutate(rng: Rng, bytes: Uint8Array, fields: number[]): Uint8Array {
  const out = bytes.slice();
  const choice = rng.below(10);
  if (choice === 0) return out;
  if (choice === 1) return out.slice(0, rng.below(out.length));
  for (let m = rng.range(1, 3); m > 0; m--) {
    const at = rng.chance(0.7)
      ? Math.min(out.length - 1, fields[rng.below(fields.length)] + rng.below(9))
      : rng.below(out.length);
    out[at] = rng.chance(0.5) ? rng.below(256) : out[at] ^ (1 << rng.below(8));
  }
  return out;
}

/** A ByteSource over memory, in random-sized pieces (as a socket delivers them). */
function source(bytes: Uint8Array, rng: Rng) {
  let at = 0;
  return {
    read(buf: Uint8Array): Promise<number> {
      const n = Math.min(buf.length, bytes.length - at, rng.range(1, 5000));
      buf.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}

/** A RAM block in memory whose window throws if it would leave the block. */
function block(size: number): RamBlockTarget {
  const bytes = new Uint8Array(size);
  return {
    size,
    view(offset, length) {
      if (!(offset >= 0 && length >= 0 && offset + length <= size)) {
        throw new Error(`write outside the block: ${offset}+${length}`);
      }
      return bytes.subarray(offset, offset + length);
    },
    zeroPage(offset) {
      this.view(offset, QEMU_PAGE_SIZE).fill(0);
    },
    flushZeroPages() {},
  };
}

describe("QEMU main channel parser: its bounds", () => {
  test(`more than ${MAX_RAM_BLOCKS} RAM blocks: ProtocolError before any block is made`, async () => {
    const b = new Bytes();
    b.u32(3).u8(0x07).u32(4).raw("none").u8(0x01).u32(2).id("ram").u32(0).u32(4);
    const count = MAX_RAM_BLOCKS + 1;
    b.u64(count * QEMU_PAGE_SIZE | 0x04);
    for (let i = 0; i < count; i++) b.id(`b${i}`).u64(QEMU_PAGE_SIZE);
    let made = 0;
    const handler = {
      blocks: (list: { name: string; bytes: number }[]) => list.map((l) => (made++, block(l.bytes))),
      barrier: () => Promise.resolve(),
    };
    await assert.rejects(
      readMainStream(new StreamReader(source(Uint8Array.from(b.out), new Rng(1)), 4096), handler, {
        maxRamBytes: 2 ** 30,
        maxStateBytes: 4096,
      }),
      (error: Error) => error instanceof ProtocolError && /more than 256 RAM blocks/.test(error.message),
    );
    assert.equal(made, 0);
  });
});

describe(`QEMU main channel parser against mutated streams (seed ${seed})`, () => {
  test("100,000 streams: read whole or a ProtocolError; nothing outside a block; RAM within the limit", async () => {
    const rng = new Rng(seed);
    let read = 0;
    for (let i = 0; i < STREAMS; i++) {
      const { bytes, fields } = validStream(rng);
      const input = mutate(rng, bytes, fields);
      let ram = 0;
      const handler = {
        blocks: (list: { name: string; bytes: number }[]) => {
          ram += list.reduce((sum, b) => sum + b.bytes, 0);
          assert.ok(ram <= MAX_RAM, `seed ${seed} stream ${i}: ${ram} bytes of RAM accepted`);
          return list.map((b) => block(b.bytes));
        },
        barrier: () => Promise.resolve(),
      };
      try {
        await readMainStream(new StreamReader(source(input, rng), 4096), handler, {
          maxRamBytes: MAX_RAM,
          maxStateBytes: 4096,
        });
        read++;
      } catch (error) {
        assert.ok(error instanceof ProtocolError, `seed ${seed} stream ${i}: ${(error as Error).stack}`);
      }
    }
    assert.ok(read > STREAMS / 10, `only ${read} streams read whole: the mutations are not exploring`);
  });
});
