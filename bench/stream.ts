/**
 * One single-stream benchmark case, run under the current runtime: BYTES over one TCP
 * connection in 256 KiB writes to the native sink (`zc-ref-sink`, spawned here), and one
 * JSON line on stdout with the sender's throughput and CPU.
 *
 *   deno run -A bench/stream.ts --case writev-async --bytes 4294967296
 *   bun bench/stream.ts --case runtime-socket --bytes 536870912
 *   bun bench/stream.ts --list
 *
 * Cases (the sender; the receiver is always the native sink):
 *   native-plain               zc-ref-send: sendmsg from Zig (no JS at all)
 *   native-zerocopy            zc-ref-send --zerocopy: MSG_ZEROCOPY + error-queue drain + final wait
 *   writev-async               SocketChannel.writev on the main thread (waits through the reactor)
 *   writevZerocopy-async       SocketChannel.writevZerocopy + flushZerocopy on the main thread
 *   writevSync-worker          SocketChannel.writevSync in a Worker (blocking poll)
 *   writevZerocopySync-worker  writevZerocopySync + flushZerocopySync in a Worker
 *   runtime-socket             the runtime's own socket: Deno.connect / Bun.connect, same buffers
 *
 * Throughput and CPU are the sender's: from the first write to the last (zero-copy: until
 * every completion arrived); CPU is user+sys of the whole sender process (process.cpuUsage;
 * getrusage in zc-ref-send). `--sink HOST:PORT` sends to a zc-ref-sink already running
 * elsewhere (another host: see docs/REAL_NIC.md) instead of spawning one. Every case sends
 * from a page-aligned buffer; `--source-offset N` starts it N bytes into a page instead (as
 * Deno's large ArrayBuffers start 16 bytes in), to measure what alignment costs.
 * @module
 */
import { parseArgs } from "node:util";
import { connect } from "../mod.ts";
import { nativeProgram, type SinkResult, startSink } from "./lib/native.ts";
import { runJson } from "../dev/child.ts";
import { currentRuntime } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { type ReadyMessage, WorkerInbox } from "../util/worker.ts";
import { processCpuSeconds } from "../util/cpu.ts";
import { runMain } from "./lib/proc.ts";
import { DEFAULT_WRITE_BYTES, makeSource, sliceAt, SOURCE_BYTES } from "./lib/source.ts";
import type { WorkerJob, WorkerOutcome } from "./stream_worker.ts";

export const STREAM_CASES = [
  "native-plain",
  "native-zerocopy",
  "writev-async",
  "writevZerocopy-async",
  "writevSync-worker",
  "writevZerocopySync-worker",
  "runtime-socket",
] as const;
export type StreamCase = typeof STREAM_CASES[number];

/** Cases that do not depend on the runtime (run once per repetition, not once per runtime). */
export const NATIVE_STREAM_CASES: readonly StreamCase[] = ["native-plain", "native-zerocopy"];
const ZEROCOPY_CASES: readonly StreamCase[] = ["native-zerocopy", "writevZerocopy-async", "writevZerocopySync-worker"];
/** How long the sink may take to report after the sender is done. */
const SINK_REPORT_TIMEOUT_MS = 30_000;

interface Outcome {
  bytes: number;
  seconds: number;
  cpuSeconds: number;
  /** write calls made by the sender (one per 256 KiB slice; zc-ref-send: sendmsg calls) */
  calls: number;
  zerocopySends?: number;
  zerocopyCopied?: number;
}

interface Target {
  host: string;
  port: number;
}

/** What every case sends, and where. */
interface Plan {
  target: Target;
  bytes: number;
  writeBytes: number;
  /** Bytes into a page where the source buffer starts (0: page-aligned). */
  sourceOffset: number;
}

const USAGE = `usage: stream.ts --case NAME [--bytes N] [--write-kib N] [--source-offset N] [--sink HOST:PORT] [--list]
  --case NAME        one of: ${STREAM_CASES.join(", ")}
  --bytes N          bytes to stream (default 4 GiB)
  --write-kib N      bytes per write call, KiB (default 256)
  --source-offset N  start the source buffer N bytes into a page (0 to 4095; default 0, page-aligned)
  --sink HOST:PORT   send to a running zc-ref-sink (IPv4) instead of spawning one here
  --list             print the case names`;

async function nativeSend({ target, bytes, writeBytes, sourceOffset }: Plan, zerocopy: boolean): Promise<Outcome> {
  const program = nativeProgram("zc-ref-send");
  if (!program) throw new Error("zc-ref-send is not available (zig build failed)");
  const argv = [program, target.host, String(target.port), String(bytes), "--write-bytes", String(writeBytes)];
  argv.push("--buffer-offset", String(sourceOffset));
  if (zerocopy) argv.push("--zerocopy");
  const r = await runJson<Outcome>(argv, { label: "zc-ref-send" });
  return {
    bytes: r.bytes,
    seconds: r.seconds,
    cpuSeconds: r.cpuSeconds,
    calls: r.calls,
    zerocopySends: r.zerocopySends,
    zerocopyCopied: r.zerocopyCopied,
  };
}

async function asyncSend({ target, bytes, writeBytes, sourceOffset }: Plan, zerocopy: boolean): Promise<Outcome> {
  const channel = await connect({ hostname: target.host, port: target.port, zerocopy });
  const source = makeSource(SOURCE_BYTES, sourceOffset);
  try {
    let sent = 0;
    let calls = 0;
    const cpuStarted = processCpuSeconds();
    const started = performance.now();
    while (sent < bytes) {
      const view = sliceAt(source, sent, writeBytes, bytes);
      sent += zerocopy ? await channel.writevZerocopy([view]) : await channel.writev([view]);
      calls++;
    }
    if (zerocopy) await channel.flushZerocopy();
    const seconds = (performance.now() - started) / 1000;
    const cpuSeconds = processCpuSeconds() - cpuStarted;
    const { zerocopySends, zerocopyCopied } = channel.stats;
    return { bytes: sent, seconds, cpuSeconds, calls, zerocopySends, zerocopyCopied };
  } finally {
    channel.close();
  }
}

async function workerSend({ target, bytes, writeBytes, sourceOffset }: Plan, zerocopy: boolean): Promise<Outcome> {
  const channel = await connect({ hostname: target.host, port: target.port, zerocopy });
  const inbox = new WorkerInbox<ReadyMessage | WorkerOutcome>(
    new URL("./stream_worker.ts", import.meta.url),
    "stream worker",
  );
  try {
    await inbox.ready();
    const job: WorkerJob = { fd: channel.detach(), bytes, writeBytes, zerocopy, sourceOffset };
    inbox.worker.postMessage(job);
    const outcome = await inbox.next() as WorkerOutcome;
    if (outcome.error) throw new Error(outcome.error);
    return outcome;
  } finally {
    inbox.terminate();
    if (!channel.closed) channel.close();
  }
}

/** The runtime's own TCP socket (no zero-copy possible there), writing the same slices. */
function runtimeSend(plan: Plan): Promise<Outcome> {
  return currentRuntime === "bun" ? bunSend(plan) : denoSend(plan);
}

async function denoSend({ target, bytes, writeBytes, sourceOffset }: Plan): Promise<Outcome> {
  const conn = await Deno.connect({ hostname: target.host, port: target.port });
  conn.setNoDelay(true);
  const source = makeSource(SOURCE_BYTES, sourceOffset);
  try {
    let sent = 0;
    let calls = 0;
    const cpuStarted = processCpuSeconds();
    const started = performance.now();
    while (sent < bytes) {
      let view = sliceAt(source, sent, writeBytes, bytes);
      calls++;
      while (view.length > 0) {
        const n = await conn.write(view);
        view = view.subarray(n);
        sent += n;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    return { bytes: sent, seconds, cpuSeconds: processCpuSeconds() - cpuStarted, calls };
  } finally {
    conn.close();
  }
}

interface BunSocket {
  write(data: Uint8Array): number;
  setNoDelay?(noDelay: boolean): boolean;
  end(): void;
}
interface BunConnect {
  connect(options: {
    hostname: string;
    port: number;
    socket: {
      data(socket: BunSocket, data: Uint8Array): void;
      drain(socket: BunSocket): void;
      error?(socket: BunSocket, error: Error): void;
      close?(socket: BunSocket): void;
    };
  }): Promise<BunSocket>;
}

async function bunSend({ target, bytes, writeBytes, sourceOffset }: Plan): Promise<Outcome> {
  const bun = (globalThis as unknown as { Bun: BunConnect }).Bun;
  let drained: (() => void) | undefined;
  let failure: Error | undefined;
  const socket = await bun.connect({
    hostname: target.host,
    port: target.port,
    socket: {
      data() {},
      drain() {
        drained?.();
      },
      error(_socket, error) {
        failure = error;
        drained?.();
      },
      close() {
        failure ??= new Error("connection closed");
        drained?.();
      },
    },
  });
  socket.setNoDelay?.(true);
  const source = makeSource(SOURCE_BYTES, sourceOffset);
  try {
    let sent = 0;
    let calls = 0;
    const cpuStarted = processCpuSeconds();
    const started = performance.now();
    while (sent < bytes) {
      let view = sliceAt(source, sent, writeBytes, bytes);
      calls++;
      while (view.length > 0) {
        if (failure) throw failure;
        const n = socket.write(view);
        if (n < 0) throw new Error(`Bun socket.write returned ${n}`);
        view = view.subarray(n);
        sent += n;
        // Backpressure: the rest waits for the drain callback (Bun does not queue it).
        if (view.length > 0) await new Promise<void>((resolve) => (drained = resolve));
      }
    }
    const seconds = (performance.now() - started) / 1000;
    return { bytes: sent, seconds, cpuSeconds: processCpuSeconds() - cpuStarted, calls };
  } finally {
    socket.end();
  }
}

/** Runs one case; resolves with its JSON record. */
export async function runStreamCase(
  name: StreamCase,
  bytes: number,
  writeBytes = DEFAULT_WRITE_BYTES,
  remote?: Target,
  sourceOffset = 0,
): Promise<Record<string, unknown>> {
  const sink = remote ? undefined : await startSink();
  const plan: Plan = { target: remote ?? { host: "127.0.0.1", port: sink!.port }, bytes, writeBytes, sourceOffset };
  let outcome: Outcome;
  try {
    switch (name) {
      case "native-plain":
      case "native-zerocopy":
        outcome = await nativeSend(plan, name === "native-zerocopy");
        break;
      case "writev-async":
      case "writevZerocopy-async":
        outcome = await asyncSend(plan, name === "writevZerocopy-async");
        break;
      case "writevSync-worker":
      case "writevZerocopySync-worker":
        outcome = await workerSend(plan, name === "writevZerocopySync-worker");
        break;
      case "runtime-socket":
        outcome = await runtimeSend(plan);
        break;
    }
  } catch (error) {
    await sink?.kill();
    throw error;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error("the sink did not report: the connection was not closed")),
      SINK_REPORT_TIMEOUT_MS,
    );
  });
  const received: SinkResult | undefined = sink
    ? await Promise.race([sink.result, late]).finally(() => (clearTimeout(timer), sink.kill()))
    : undefined;
  const gb = outcome.bytes / 1e9;
  return {
    bench: "stream",
    case: name,
    runtime: NATIVE_STREAM_CASES.includes(name) ? "native" : currentRuntime,
    bytes: outcome.bytes,
    writeBytes,
    sourceOffset,
    seconds: round(outcome.seconds, 4),
    GBps: round(gb / outcome.seconds, 3),
    cpuSeconds: round(outcome.cpuSeconds, 4),
    cpuSecondsPerGB: round(outcome.cpuSeconds / gb, 4),
    calls: outcome.calls,
    ...(ZEROCOPY_CASES.includes(name) &&
      { zerocopySends: outcome.zerocopySends, zerocopyCopied: outcome.zerocopyCopied }),
    ...(received && {
      sinkGBps: round(received.GBps, 3),
      sinkCpuSecondsPerGB: round(received.cpuSeconds / (received.bytes / 1e9), 4),
      verified: received.bytes === outcome.bytes,
    }),
  };
}

/** HOST:PORT (IPv4) → target. */
export function parseTarget(text: string): Target {
  const match = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
    throw new Error(`expected IPv4 HOST:PORT, got "${text}"`);
  }
  return { host: match[1], port: Number(match[2]) };
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        case: { type: "string" },
        bytes: { type: "string", default: String(4 * 2 ** 30) },
        "write-kib": { type: "string", default: String(DEFAULT_WRITE_BYTES / 1024) },
        "source-offset": { type: "string", default: "0" },
        sink: { type: "string" },
        list: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (error) {
    note(`stream.ts: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) return out(USAGE), 0;
  if (values.list) return out(STREAM_CASES.join("\n")), 0;
  const name = values.case as StreamCase;
  const bytes = Number(values.bytes);
  const writeKib = Number(values["write-kib"]);
  const sourceOffset = Number(values["source-offset"]);
  if (
    !STREAM_CASES.includes(name) || !Number.isSafeInteger(bytes) || bytes <= 0 || !(writeKib > 0) ||
    !Number.isInteger(sourceOffset) || sourceOffset < 0 || sourceOffset >= 4096
  ) {
    note(`stream.ts: bad arguments\n${USAGE}`);
    return 2;
  }
  const remote = values.sink ? parseTarget(values.sink) : undefined;
  out(JSON.stringify(await runStreamCase(name, bytes, Math.round(writeKib * 1024), remote, sourceOffset)));
  return 0;
}

if (import.meta.main) await runMain("stream.ts", main, (error) => error.message);
