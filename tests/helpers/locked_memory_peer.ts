/**
 * Zero-copy under RLIMIT_MEMLOCK, for unprivileged.test.ts (run as an ordinary user with
 * a small `ulimit -l`). Both ends in this process, over loopback. Prints one JSON line.
 *   stream TOTAL WRITE BUDGET      TOTAL bytes in writevZerocopy calls of WRITE bytes (a
 *                                  64 MiB pattern sent over and over), byte-exact check;
 *                                  the channel's stats
 *   multifd SIZE CHANNELS BUDGET   a SIZE-byte region over CHANNELS zero-copy channels,
 *                                  destination compared byte for byte
 * BUDGET: "default" (the channel's default), or zerocopyBudgetBytes (-1: no limit).
 */
import process from "node:process";
import {
  connect,
  listen,
  lockedMemoryBudget,
  lockedMemoryFacts,
  MultifdReceiver,
  MultifdSender,
  Region,
  runtime,
} from "../../mod.ts";
import { fillPattern, SECRET } from "./multifd.ts";
import { patternBytes, sameBytes } from "./pattern.ts";

const [mode = "stream", ...args] = process.argv.slice(2);

const errorInfo = (error: unknown) => {
  const e = error as Error & { code?: string };
  return { name: e.name, code: e.code, message: e.message };
};

const budgetOption = (arg: string | undefined) =>
  arg === undefined || arg === "default" ? {} : { zerocopyBudgetBytes: Number(arg) };

async function stream(total: number, writeBytes: number, budget: string | undefined) {
  const listener = await listen({ hostname: "127.0.0.1", port: 0, ioTimeoutMs: 30_000 });
  const [client, server] = await Promise.all([
    connect({
      hostname: "127.0.0.1",
      port: listener.port,
      zerocopy: true,
      ioTimeoutMs: 30_000,
      ...budgetOption(budget),
    }),
    listener.accept(5_000),
  ]);
  listener.close();
  try {
    if (!client.zerocopy) return { error: { name: "setup", message: "SO_ZEROCOPY refused" } };
    const source = patternBytes(64 << 20, 31);
    // The reader checks every chunk against the source as it arrives (no 2nd copy of TOTAL).
    const reading = (async () => {
      const chunk = new Uint8Array(4 << 20);
      let at = 0;
      while (at < total) {
        const length = Math.min(chunk.length, total - at, source.length - (at % source.length));
        const view = chunk.subarray(0, length);
        if (await server.readFull(view) < length) return false;
        const offset = at % source.length;
        if (!sameBytes(view, source.subarray(offset, offset + length))) return false;
        at += length;
      }
      return true;
    })();
    reading.catch(() => {});
    const startedAt = performance.now();
    let maxPinned = 0;
    try {
      let sent = 0;
      while (sent < total) {
        const offset = sent % source.length;
        const length = Math.min(writeBytes, source.length - offset, total - sent);
        sent += await client.writevZerocopy([source.subarray(offset, offset + length)]);
        maxPinned = Math.max(maxPinned, client.zerocopyPinnedBytes);
      }
      const flushed = await client.flushZerocopy();
      const verified = await reading;
      return {
        verified,
        bytes: total,
        flushed,
        ms: Math.round(performance.now() - startedAt),
        budget: client.zerocopyBudgetBytes,
        maxPinned,
        ...client.stats,
      };
    } catch (error) {
      return { error: errorInfo(error), budget: client.zerocopyBudgetBytes, ...client.stats };
    }
  } finally {
    client.close();
    server.close();
  }
}

async function multifd(size: number, channels: number, budget: string | undefined) {
  const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 30_000 });
  const source = Region.allocate(size);
  const destination = Region.allocate(size);
  fillPattern(source, 7);
  const receiving = receiver.receive(destination);
  receiving.catch(() => {});
  const startedAt = performance.now();
  try {
    const sender = await MultifdSender.connect(source, {
      hostname: "127.0.0.1",
      port: receiver.port,
      secret: SECRET,
      channels,
      zerocopy: true,
      zerocopyFallback: false, // every send under the budget, though loopback copies them
      ioTimeoutMs: 30_000,
      ...budgetOption(budget),
    });
    await sender.sendRound();
    const sent = await sender.finish();
    const received = await receiving;
    return {
      verified: sent.verified && received.verified,
      equal: destination.equals(source),
      sender: { verified: sent.verified, bytes: sent.bytes, checksum: sent.checksum, remote: sent.remoteChecksum },
      receiver: { verified: received.verified, bytes: received.bytes },
      bytes: sent.bytes,
      ms: Math.round(performance.now() - startedAt),
      zerocopySends: sent.zerocopySends,
    };
  } catch (error) {
    await receiver.abort().catch(() => {});
    return { error: errorInfo(error) };
  } finally {
    await source.close();
    await destination.close();
  }
}

try {
  const facts = { runtime, uid: process.getuid?.(), ...lockedMemoryFacts(), processBudget: lockedMemoryBudget() };
  const result = mode === "multifd"
    ? await multifd(Number(args[0]), Number(args[1]), args[2])
    : await stream(Number(args[0]), Number(args[1]), args[2]);
  console.log(JSON.stringify({ ...facts, ...result }));
} catch (error) {
  console.log(JSON.stringify({ error: errorInfo(error) }));
  process.exitCode = 1;
}
