/**
 * One side of one multifd benchmark case, in its own process (so that each side's CPU
 * and peak RSS are its own), under the current runtime. bench/multifd.ts starts both.
 *
 *   recv --size BYTES [--huge] [--host H] [--port P]
 *       allocates the destination (pre-faulted), listens, prints {"port", "pid"}, receives
 *       one transfer, prints the receiver's result and its peak RSS.
 *   send --port P --size BYTES --channels N [--zerocopy [--zerocopy-always]] [--encrypt CIPHER] [--huge] [--send-buffer BYTES] [--pages-per-packet N]
 *        [--no-zero-pages] [--zero-share PERCENT] [--host H] [--peer-pid PID]
 *       allocates the source (pre-faulted), fills it with random data (--zero-share: that
 *       percent of its 4 KiB pages all zero, in runs of that many in every 100), connects, waits until
 *       both processes are idle, then sends one round (every page, then a sync) and reads the
 *       CPU time of both processes (/proc/PID/stat) around it; then finish() (checksums).
 *
 * The shared secret comes from $BENCH_SECRET (hex); both sides must have the same.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { type Cipher, MultifdReceiver, MultifdSender, PAGE_SIZE, Region } from "../mod.ts";
import { err as note, out } from "../util/output.ts";
import { fillRandom } from "../util/random.ts";
import { cpuTimesOf, peakRssKiB, runMain, settle } from "./lib/proc.ts";
import { ThreadCpu } from "./lib/threads.ts";

function secret(): Uint8Array {
  const hex = process.env.BENCH_SECRET ?? "";
  if (!/^([0-9a-f]{2}){16,}$/.test(hex)) throw new Error("BENCH_SECRET must be ≥ 16 bytes of hex");
  return Uint8Array.from(hex.match(/../g)!, (byte) => parseInt(byte, 16));
}

function allocate(size: number, huge: boolean): { region: Region; seconds: number } {
  const started = performance.now();
  const region = Region.allocate(size, { hugePages: huge, prefault: true });
  return { region, seconds: (performance.now() - started) / 1000 };
}

/** Makes `percent` of the region's 4 KiB pages all zero: the first `percent` of every 100. */
function zeroPages(region: Region, percent: number): void {
  if (!(percent >= 0 && percent <= 100)) throw new Error(`--zero-share: 0..100, got ${percent}`);
  if (percent === 0) return;
  for (let at = 0; at < region.size; at += 100 * PAGE_SIZE) {
    const length = Math.min(percent * PAGE_SIZE, region.size - at);
    region.view(at, length).fill(0);
  }
}

async function receive(values: Record<string, string | boolean | undefined>): Promise<void> {
  const size = Number(values.size);
  const { region, seconds: allocateSeconds } = allocate(size, values.huge === true);
  const receiver = await MultifdReceiver.listen({
    hostname: String(values.host ?? "127.0.0.1"),
    port: Number(values.port ?? 0),
    secret: secret(),
    maxSize: size,
  });
  out(JSON.stringify({ port: receiver.port, pid: process.pid }));
  const result = await receiver.receive(region);
  await region.close();
  const { perChannelBytes: _, ...rest } = result;
  out(JSON.stringify({ role: "recv", ...rest, allocateSeconds, peakRssKiB: peakRssKiB() }));
}

async function send(values: Record<string, string | boolean | undefined>): Promise<void> {
  const size = Number(values.size);
  const { region, seconds: allocateSeconds } = allocate(size, values.huge === true);
  const fillStarted = performance.now();
  fillRandom(region);
  zeroPages(region, Number(values["zero-share"] ?? 0));
  const fillSeconds = (performance.now() - fillStarted) / 1000;
  const peer = values["peer-pid"] === undefined ? undefined : Number(values["peer-pid"]);
  const sender = await MultifdSender.connect(region, {
    hostname: String(values.host ?? "127.0.0.1"),
    port: Number(values.port),
    secret: secret(),
    channels: Number(values.channels),
    zerocopy: values.zerocopy === true,
    zerocopyFallback: values["zerocopy-always"] !== true,
    encrypt: (values.encrypt as Cipher | undefined) ?? false,
    sendBufferBytes: values["send-buffer"] === undefined ? undefined : Number(values["send-buffer"]),
    pagesPerPacket: values["pages-per-packet"] === undefined ? undefined : Number(values["pages-per-packet"]),
    zeroPages: values["no-zero-pages"] !== true,
  });
  // Worker start-up (both sides) is set-up, not transfer: wait until both processes idle.
  await settle(peer === undefined ? [process.pid] : [process.pid, peer]);
  const cpuBefore = cpuTimesOf("self");
  const peerBefore = peer === undefined ? undefined : cpuTimesOf(peer);
  const peerThreads = peer === undefined ? undefined : new ThreadCpu(peer).start();
  const ownThreads = new ThreadCpu(process.pid).start();
  await sender.sendRound();
  const cpuAfter = cpuTimesOf("self");
  const peerAfter = peer === undefined ? undefined : cpuTimesOf(peer);
  const cpuSeconds = cpuAfter.total - cpuBefore.total;
  const systemCpuSeconds = cpuAfter.system - cpuBefore.system;
  const peerCpuSeconds = peerAfter && peerBefore && peerAfter.total - peerBefore.total;
  const peerSystemCpuSeconds = peerAfter && peerBefore && peerAfter.system - peerBefore.system;
  const peerCpuByThread = peerThreads?.stop();
  const cpuByThread = ownThreads.stop();
  const result = await sender.finish();
  await region.close();
  const { perChannelBytes: _, ...rest } = result;
  out(JSON.stringify({
    role: "send",
    ...rest,
    cpuSeconds,
    systemCpuSeconds,
    peerCpuSeconds,
    peerSystemCpuSeconds,
    cpuByThread,
    peerCpuByThread,
    allocateSeconds,
    fillSeconds,
    peakRssKiB: peakRssKiB(),
  }));
}

const USAGE = `usage: multifd_peer.ts recv --size BYTES [--huge] [--host H] [--port P]
       multifd_peer.ts send --port P --size BYTES --channels N [--zerocopy [--zerocopy-always]] [--encrypt CIPHER] [--huge] [--send-buffer BYTES] [--pages-per-packet N]
                            [--no-zero-pages] [--zero-share PERCENT] [--host H] [--peer-pid PID]
(secret: $BENCH_SECRET, hex)`;

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        size: { type: "string" },
        huge: { type: "boolean", default: false },
        host: { type: "string" },
        port: { type: "string" },
        channels: { type: "string", default: "2" },
        zerocopy: { type: "boolean", default: false },
        "zerocopy-always": { type: "boolean", default: false },
        encrypt: { type: "string" },
        "send-buffer": { type: "string" },
        "pages-per-packet": { type: "string" },
        "no-zero-pages": { type: "boolean", default: false },
        "zero-share": { type: "string" },
        "peer-pid": { type: "string" },
      },
      strict: true,
    });
  } catch (error) {
    note(`multifd_peer.ts: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const role = parsed.positionals[0];
  if (!(Number(parsed.values.size) > 0) || (role !== "recv" && role !== "send")) {
    note(USAGE);
    return 2;
  }
  await (role === "recv" ? receive(parsed.values) : send(parsed.values));
  return 0;
}

await runMain("multifd_peer.ts", main, (error) => `${error.name}: ${error.message}`);
