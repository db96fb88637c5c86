/**
 * What the receive side's per-packet JS costs for QEMU's multifd packets, with warm caches
 * and with caches evicted between packets, as they are in a real receive: between two
 * packets of a channel the kernel copies 512 KiB of pages out of the socket and zeroes new
 * pages, and the other channels and the QEMU source share the 2 cores, so the next packet's
 * code and data (the engine's interpreter and baseline code, feedback, objects) come back
 * from memory. QEMU's per-packet C code is a few KiB; ours is the JS engine's.
 *
 *   deno run -A bench/packet_cache.ts [--packets 8192] [--evict-mib 16]
 *   bun bench/packet_cache.ts
 *
 * No socket: the codec's `next()` (src/qemu/qemu_codec.ts: the header's parse, then one native
 * call that decodes the offsets, receives the pages and reads the next header ahead — for a
 * run of packets on a socket, one packet here) is timed
 * with that call made on no socket (its checks and iovecs, then a recvmsg that fails at once)
 * and the next header put where its read ahead puts it; beside
 * it, one FFI call that does no work (`zc_zero_pages` of no pages), and nothing at all (the
 * timer's own cost). Warm and evicted batches alternate after a warm-up of both; "evicted"
 * copies `--evict-mib` MiB before each call (outside the timing). One JSON line per case and
 * mode: median µs per call over the batches.
 * @module
 */
import { parseArgs } from "node:util";
import { native, viewOf } from "../ffi/mod.ts";
import type { PacketInput } from "../src/multifd/codec.ts";
import { qemuFormat } from "../src/qemu/qemu_codec.ts";
import {
  MULTIFD_PACKET_HEADER_BYTES,
  MULTIFD_PAGES_PER_PACKET,
  QEMU_PAGE_SIZE,
  writeMultifdPacket,
} from "../src/qemu/wire.ts";
import { Region } from "../src/region.ts";
import { currentRuntime } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { spread } from "./lib/report.ts";

const BLOCK = "pc.ram";
const BATCH = 256;

/** `count` distinct packets of full, contiguous pages, as QEMU sends a RAM block's (512 KiB each). */
function makePackets(count: number): Uint8Array[] {
  const id = new TextEncoder().encode(BLOCK);
  const offsets = new Float64Array(MULTIFD_PAGES_PER_PACKET);
  return Array.from({ length: count }, (_, p) => {
    const header = new DataView(new ArrayBuffer(MULTIFD_PACKET_HEADER_BYTES));
    for (let i = 0; i < offsets.length; i++) offsets[i] = (p * offsets.length + i) * QEMU_PAGE_SIZE;
    writeMultifdPacket(header, id, offsets, offsets.length, p, false);
    return new Uint8Array(header.buffer);
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { packets: { type: "string", default: "8192" }, "evict-mib": { type: "string", default: "16" } },
    strict: true,
  });
  const count = Number(values.packets);
  const evictBytes = Number(values["evict-mib"]) * 2 ** 20;
  if (!(count >= 2 * BATCH) || !(evictBytes > 0)) throw new Error(`--packets: at least ${2 * BATCH}; --evict-mib: > 0`);
  const packets = makePackets(count);
  // Only the addresses are used: its pages are never touched (mapped without reserving memory).
  const region = Region.allocate(count * MULTIFD_PAGES_PER_PACKET * QEMU_PAGE_SIZE);
  const descriptor = region.descriptor;
  const codec = qemuFormat.receiver(
    {
      channelId: 0,
      pageSize: QEMU_PAGE_SIZE,
      pagesPerPacket: MULTIFD_PAGES_PER_PACKET,
      qemu: { ramBlocks: [{ name: BLOCK, region: descriptor }] },
    },
    descriptor,
    () => {},
  );
  let next = 0;
  let header: Uint8Array | undefined;
  const outcome = new Float64Array(5);
  const runOutcome = new Float64Array(9);
  const input: PacketInput = {
    read: (addresses, lengths) => {
      if (lengths.length === 1 && lengths[0] === MULTIFD_PACKET_HEADER_BYTES) {
        header ??= viewOf(addresses[0], MULTIFD_PACKET_HEADER_BYTES);
        header.set(packets[next++ % count]);
      }
      return true;
    },
    // The channel's native packet receive on no socket (fd -1): the offsets' decode, the
    // iovecs, and a recvmsg that fails at once (EBADF); the next header is then put in place
    // as its read ahead would.
    readWirePages: (
      { memory, pageSize, wire, at, count: offsetCount, normalCount, offsets, layout, payloadBytes, aheadLength },
    ) => {
      native.zc_recv_wire_pages(
        -1,
        memory.address,
        memory.size,
        pageSize,
        wire,
        at,
        offsetCount,
        normalCount,
        offsets,
        layout,
        payloadBytes,
        0,
        0,
        aheadLength,
        outcome,
      );
      if (aheadLength > 0) wire.set(packets[next++ % count].subarray(0, aheadLength));
      return aheadLength;
    },
    // A run of data packets, the same way: its first packet's decode and a recvmsg that fails,
    // then the next header in place (each call one packet, as without runs).
    readWireRun: ({ memory, pageSize, wire, offsets }, run) => {
      native.zc_recv_wire_run(-1, memory.address, memory.size, pageSize, wire, run.rule, offsets, 0, -1, 0, runOutcome);
      wire.set(packets[next++ % count]);
      return MULTIFD_PACKET_HEADER_BYTES;
    },
  };
  const from = new Uint8Array(evictBytes).fill(1);
  const to = new Uint8Array(evictBytes);
  const noOffsets = new Float64Array(1);
  const cases: Record<string, () => unknown> = {
    "packet": () => codec.next(input),
    "ffi-call": () => native.zc_zero_pages(0, QEMU_PAGE_SIZE, QEMU_PAGE_SIZE, noOffsets, 0, 0, -1),
    "nothing": () => 0,
  };
  const batch = (call: () => unknown, evict: boolean): number => {
    let spent = 0;
    for (let i = 0; i < BATCH; i++) {
      if (evict) to.set(from);
      const started = performance.now();
      call();
      spent += performance.now() - started;
    }
    return (spent * 1000) / BATCH;
  };
  const batches = Math.floor(count / BATCH / 2);
  for (const [name, call] of Object.entries(cases)) {
    batch(call, false); // warm-up: the engine compiles and optimises the path first
    batch(call, true);
    const warm: number[] = [];
    const evicted: number[] = [];
    for (let b = 0; b < batches; b++) {
      warm.push(batch(call, false));
      evicted.push(batch(call, true));
    }
    for (const [mode, us] of [["warm", warm], ["evicted", evicted]] as const) {
      const { median, min, max } = spread(us)!;
      out(JSON.stringify({
        bench: "packet-cache",
        runtime: currentRuntime,
        case: name,
        mode,
        evictMiB: mode === "evicted" ? evictBytes / 2 ** 20 : 0,
        usPerCall: round(median, 2),
        minUs: round(min, 2),
        maxUs: round(max, 2),
        batches,
        callsPerBatch: BATCH,
      }));
    }
  }
  await region.close();
  return 0;
}

await runMain("packet_cache.ts", main);
