/**
 * Streams GiBs over loopback with `writevZerocopy`, flushes, and prints the throughput
 * and how many completions the kernel reported as copied (on loopback: all of them).
 *
 *   deno run -A examples/zerocopy_stream.ts --gib 1
 *   bun examples/zerocopy_stream.ts --gib 1 --no-zerocopy --json
 *
 * The receiver runs in a Worker (a blocking sink), the sender on the main thread.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { connect, listen, runtime } from "../mod.ts";
import { type ReadyMessage, WorkerInbox } from "../util/worker.ts";

const USAGE = `usage: zerocopy_stream.ts [--gib N] [--write-kib N] [--no-zerocopy] [--json]
  --gib N         GiB to stream (default 1)
  --write-kib N   bytes per write call, in KiB (default 256)
  --no-zerocopy   plain writev instead of writevZerocopy
  --json          print one JSON object instead of text`;

function options() {
  try {
    const { values } = parseArgs({
      options: {
        gib: { type: "string", default: "1" },
        "write-kib": { type: "string", default: "256" },
        "no-zerocopy": { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      process.exit(0);
    }
    const gib = Number(values.gib);
    const writeKib = Number(values["write-kib"]);
    if (!(gib > 0) || !Number.isInteger(writeKib) || writeKib < 1) throw new Error("bad number");
    return {
      bytes: Math.round(gib * 2 ** 30),
      writeBytes: writeKib * 1024,
      zerocopy: !values["no-zerocopy"],
      json: values.json,
    };
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}

const { bytes, writeBytes, zerocopy, json } = options();
const listener = await listen({ hostname: "127.0.0.1", port: 0 });
const [client, server] = await Promise.all([
  connect({ hostname: "127.0.0.1", port: listener.port, zerocopy }),
  listener.accept(),
]);
listener.close();

const sink = new WorkerInbox<ReadyMessage | { bytes?: number; error?: string }>(
  new URL("./stream_sink_worker.ts", import.meta.url),
  "stream sink",
);
const received = sink.ready().then(async () => {
  sink.worker.postMessage({ fd: server.detach() });
  const result = await sink.next() as { bytes?: number; error?: string };
  if (result.error) throw new Error(result.error);
  return result.bytes!;
});

// A 64 MiB source sent over and over; it is never modified, so reusing it between
// flushes is allowed (only modification before the flush is not).
const source = new Uint8Array(64 << 20);
crypto.getRandomValues(source.subarray(0, 65536));
for (let offset = 65536; offset < source.length; offset *= 2) source.copyWithin(offset, 0, offset);

const start = performance.now();
let sent = 0;
while (sent < bytes) {
  const offset = sent % source.length;
  const length = Math.min(writeBytes, source.length - offset, bytes - sent);
  const view = source.subarray(offset, offset + length);
  sent += zerocopy ? await client.writevZerocopy([view]) : await client.writev([view]);
}
const allCopied = await client.flushZerocopy();
const sendSeconds = (performance.now() - start) / 1000;
client.close();
const receivedBytes = await received;
sink.terminate();

const stats = client.stats;
const result = {
  runtime,
  bytes: sent,
  seconds: +sendSeconds.toFixed(3),
  GBps: +(sent / sendSeconds / 1e9).toFixed(3),
  zerocopy,
  zerocopySends: stats.zerocopySends,
  zerocopyCompletions: stats.zerocopyCompletions,
  zerocopyCopied: stats.zerocopyCopied,
  allCopied: allCopied === 1,
  receivedBytes,
  verifiedLength: receivedBytes === sent,
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  console.log(
    `${runtime}: sent ${(sent / 2 ** 30).toFixed(2)} GiB in ${result.seconds} s = ${result.GBps} GB/s ` +
      `(${zerocopy ? "writevZerocopy" : "writev"}, ${writeBytes / 1024} KiB writes)`,
  );
  if (zerocopy) {
    console.log(
      `zero-copy sends: ${stats.zerocopySends}, completions: ${stats.zerocopyCompletions}, ` +
        `copied by the kernel: ${stats.zerocopyCopied}` +
        (allCopied ? " (all: expected on loopback, the kernel copies on local delivery)" : ""),
    );
  }
  console.log(`receiver got ${receivedBytes} bytes${receivedBytes === sent ? " (all)" : " (MISMATCH)"}`);
}
if (receivedBytes !== sent) process.exit(1);
