/**
 * Per-call cost of a send from JS (FFI + the module's JS) against the same sendmsg made
 * from Zig: many tiny sends on a TCP connection to the native sink (which drains fast),
 * nanoseconds per call. The difference to the native reference is the overhead the JS
 * layers add to every call; at 256 KiB per call it is what the stream benchmark amortises.
 *
 *   deno run -A bench/call_overhead.ts --method all [--calls N]
 *   bun bench/call_overhead.ts --method writevSync-1B
 *
 * Methods (the native ones each on a fresh connection; the JS ones together on one connection,
 * each warmed up, then interleaved in 10 batches, A B C / C B A, so drift hits them alike; CALLS calls each):
 *   native-empty         zc-ref-send --empty: sendmsg with no data from Zig (the syscall floor)
 *   native-1B            zc-ref-send --write-bytes 1: 1-byte sendmsg from Zig
 *   ffi-empty            native.zc_sendv(fd, iov, 0, 0) from JS: the same floor plus the FFI call
 *   ffi-1B               native.zc_sendv with one 1-byte iovec
 *   ffi-pages-empty      native.zc_zero_pages(address, size, page size, offsets, 0): a call of the
 *                        page loops every packet makes (three addresses or sizes and a buffer), no
 *                        work and no syscall — the FFI's own cost for such a call
 *   writeRangesSync-1B   SocketChannel.writeRangesSync([address], [1], false)
 *   writevSync-1B        SocketChannel.writevSync([oneByte])
 *   writev-1B            await SocketChannel.writev([oneByte]) (async, main thread)
 * Empty methods run 10x the calls (each is ~10x cheaper).
 * @module
 */
import { parseArgs } from "node:util";
import { addressOf, Errno, native, Poll } from "../ffi/mod.ts";
import { connect, type SocketChannel } from "../mod.ts";
import { nativeProgram, type RefSendResult, startSink } from "./lib/native.ts";
import { runJson } from "../dev/child.ts";
import { currentRuntime } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { processCpuSeconds } from "../util/cpu.ts";
import { runMain } from "./lib/proc.ts";

export const CALL_METHODS = [
  "native-empty",
  "native-1B",
  "ffi-empty",
  "ffi-1B",
  "ffi-pages-empty",
  "writeRangesSync-1B",
  "writevSync-1B",
  "writev-1B",
] as const;
export type CallMethod = typeof CALL_METHODS[number];
export const NATIVE_CALL_METHODS: readonly CallMethod[] = ["native-empty", "native-1B"];
export const DEFAULT_CALLS = 100_000;
const EMPTY_FACTOR = 10;
/** JS methods run interleaved in this many batches each, on one connection, so drift hits all alike. */
const ROUNDS = 10;
const WARMUP_FRACTION = 0.05;

interface Timed {
  calls: number;
  seconds: number;
  cpuSeconds: number;
}

/** One raw FFI sendmsg, waiting (poll) and retrying on EAGAIN like the module does. */
function rawSend(fd: number, iov: Uint32Array, count: number): void {
  for (;;) {
    const rc = native.zc_sendv(fd, iov, count, 0);
    if (rc >= 0) return;
    if (rc === -Errno.EAGAIN) native.zc_poll_one(fd, Poll.OUT, 10_000);
    else if (rc !== -Errno.EINTR) throw new Error(`sendmsg failed: errno ${-rc}`);
  }
}

const NO_OFFSETS = new Float64Array(1);

/** The call each JS method makes, on `channel`, with a 1-byte buffer kept alive by the closure. */
function senders(channel: SocketChannel): Record<string, { send: () => unknown; isAsync: boolean }> {
  const oneByte = new Uint8Array([42]);
  const address = addressOf(oneByte);
  // struct iovec { base, len } as u32 words (little-endian u64 pairs).
  const iov = new Uint32Array([address % 2 ** 32, Math.floor(address / 2 ** 32), 1, 0]);
  const fd = channel.fd;
  const views = [oneByte];
  const addresses = [address];
  const lengths = [1];
  return {
    "ffi-empty": { send: () => rawSend(fd, iov, 0), isAsync: false },
    "ffi-1B": { send: () => rawSend(fd, iov, 1), isAsync: false },
    "ffi-pages-empty": { send: () => native.zc_zero_pages(address, 4096, 4096, NO_OFFSETS, 0, 0, -1), isAsync: false },
    "writeRangesSync-1B": { send: () => channel.writeRangesSync(addresses, lengths, false), isAsync: false },
    "writevSync-1B": { send: () => channel.writevSync(views), isAsync: false },
    "writev-1B": { send: () => channel.writev(views), isAsync: true },
  };
}

async function loop(count: number, send: () => unknown, isAsync: boolean): Promise<void> {
  if (isAsync) { for (let i = 0; i < count; i++) await send(); }
  else for (let i = 0; i < count; i++) send();
}

/**
 * Times the JS `methods` on one connection: a warm-up of each, then ROUNDS rounds in which
 * every method makes its share of calls in turn, forward and backward on alternate rounds.
 */
async function timeJsMethods(methods: CallMethod[], baseCalls: number, channel: SocketChannel): Promise<Timed[]> {
  const table = senders(channel);
  const callsOf = (m: CallMethod) => Math.ceil((m.endsWith("-empty") ? baseCalls * EMPTY_FACTOR : baseCalls) / ROUNDS);
  for (const m of methods) {
    await loop(Math.ceil(callsOf(m) * ROUNDS * WARMUP_FRACTION), table[m].send, table[m].isAsync);
  }
  const totals = methods.map(() => ({ calls: 0, seconds: 0, cpuSeconds: 0 }));
  for (let round = 0; round < ROUNDS; round++) {
    // Forward, then backward (A B C, C B A, …): no method always follows the same one.
    for (let k = 0; k < methods.length; k++) {
      const i = round % 2 === 0 ? k : methods.length - 1 - k;
      const m = methods[i];
      const cpuStarted = processCpuSeconds();
      const started = performance.now();
      await loop(callsOf(m), table[m].send, table[m].isAsync);
      totals[i].seconds += (performance.now() - started) / 1000;
      totals[i].cpuSeconds += processCpuSeconds() - cpuStarted;
      totals[i].calls += callsOf(m);
    }
  }
  return totals;
}

function record(method: CallMethod, timed: Timed): Record<string, unknown> {
  return {
    bench: "calls",
    method,
    runtime: NATIVE_CALL_METHODS.includes(method) ? "native" : currentRuntime,
    bytesPerCall: method.endsWith("-empty") ? 0 : 1,
    calls: timed.calls,
    seconds: round(timed.seconds, 4),
    nsPerCall: round((timed.seconds * 1e9) / timed.calls, 1),
    cpuNsPerCall: round((timed.cpuSeconds * 1e9) / timed.calls, 1),
  };
}

/**
 * Runs `methods` against a fresh native sink: each native one as its own zc-ref-send run,
 * the JS ones together, interleaved, on one connection. Resolves with one record per method.
 */
export async function runCallMethods(
  methods: CallMethod[],
  baseCalls = DEFAULT_CALLS,
): Promise<Record<string, unknown>[]> {
  const records: Record<string, unknown>[] = [];
  for (const method of methods.filter((m) => NATIVE_CALL_METHODS.includes(m))) {
    const empty = method.endsWith("-empty");
    const calls = empty ? baseCalls * EMPTY_FACTOR : baseCalls;
    const program = nativeProgram("zc-ref-send");
    if (!program) throw new Error("zc-ref-send is not available (zig build failed)");
    const sink = await startSink();
    try {
      const argv = [program, "127.0.0.1", String(sink.port), String(calls)];
      argv.push(...(empty ? ["--empty"] : ["--write-bytes", "1"]));
      const r = await runJson<RefSendResult>(argv, { label: "zc-ref-send" });
      await sink.result;
      records.push(record(method, { calls: r.calls, seconds: r.seconds, cpuSeconds: r.cpuSeconds }));
    } finally {
      await sink.kill();
    }
  }
  const js = methods.filter((m) => !NATIVE_CALL_METHODS.includes(m));
  if (js.length > 0) {
    const sink = await startSink();
    try {
      const channel = await connect({ hostname: "127.0.0.1", port: sink.port });
      let timed: Timed[];
      try {
        timed = await timeJsMethods(js, baseCalls, channel);
      } finally {
        channel.close();
      }
      await sink.result;
      js.forEach((m, i) => records.push(record(m, timed[i])));
    } finally {
      await sink.kill();
    }
  }
  return records;
}

const USAGE = `usage: call_overhead.ts --method NAME|all|js|native [--calls N]
  --method NAME  one of ${CALL_METHODS.join(", ")};
                 "all" runs every method, "js" the ones in JS, "native" the native references
  --calls N      calls per 1-byte method (default ${DEFAULT_CALLS}; empty methods: ${EMPTY_FACTOR}x)`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        method: { type: "string", default: "all" },
        calls: { type: "string", default: String(DEFAULT_CALLS) },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (error) {
    note(`call_overhead.ts: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) return out(USAGE), 0;
  const calls = Number(values.calls);
  const methods = values.method === "all"
    ? [...CALL_METHODS]
    : values.method === "js"
    ? CALL_METHODS.filter((m) => !NATIVE_CALL_METHODS.includes(m))
    : values.method === "native"
    ? [...NATIVE_CALL_METHODS]
    : [values.method as CallMethod];
  if (!methods.every((m) => CALL_METHODS.includes(m)) || !Number.isSafeInteger(calls) || calls < 1) {
    note(`call_overhead.ts: bad arguments\n${USAGE}`);
    return 2;
  }
  for (const r of await runCallMethods(methods, calls)) out(JSON.stringify(r));
  return 0;
}

if (import.meta.main) await runMain("call_overhead.ts", main, (error) => error.message);
