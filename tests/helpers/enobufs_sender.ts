/**
 * Zero-copy sends under a tiny net.core.optmem_max (run inside a private network
 * namespace, see channel_enobufs.test.ts). Prints exactly one JSON line.
 *   stream COUNT   COUNT small zero-copy sends (1–4 KiB, distinct bytes) to a reader in
 *                  this process, flush, byte-exact check; the channel's stats
 *   refused        zero-copy sends (async, then sync) on an idle channel, then the same
 *                  bytes with a plain writev; what each did
 */
import process from "node:process";
import { connect, listen, type SocketChannel } from "../../mod.ts";
import { patternBytes, random, sameBytes } from "./pattern.ts";

const [mode = "stream", countArg = "20000"] = process.argv.slice(2);

const errorInfo = (error: unknown) => {
  const e = error as Error & { code?: string };
  return { name: e.name, code: e.code, message: e.message };
};

async function pair(): Promise<{ client: SocketChannel; server: SocketChannel; close(): void }> {
  const listener = await listen({ hostname: "127.0.0.1", port: 0, ioTimeoutMs: 20_000 });
  try {
    const [client, server] = await Promise.all([
      connect({ hostname: "127.0.0.1", port: listener.port, zerocopy: true, ioTimeoutMs: 20_000 }),
      listener.accept(5_000),
    ]);
    return {
      client,
      server,
      close() {
        client.close();
        server.close();
      },
    };
  } finally {
    listener.close();
  }
}

async function stream(count: number) {
  const { client, server, close } = await pair();
  try {
    if (!client.zerocopy) return { error: { name: "setup", message: "SO_ZEROCOPY refused" } };
    const next = random(42);
    const sizes = Array.from({ length: count }, () => 1024 + next(3 * 1024 + 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    const source = patternBytes(total, 77);
    const received = new Uint8Array(total);
    const reading = server.readFull(received);
    reading.catch(() => {});
    const startedAt = performance.now();
    try {
      let offset = 0;
      for (const size of sizes) {
        await client.writevZerocopy([source.subarray(offset, offset + size)]);
        offset += size;
      }
      const flushed = await client.flushZerocopy();
      const read = await reading;
      return {
        verified: read === total && sameBytes(received, source),
        bytes: total,
        flushed,
        ms: Math.round(performance.now() - startedAt),
        ...client.stats,
      };
    } catch (error) {
      return { error: errorInfo(error), ...client.stats };
    }
  } finally {
    close();
  }
}

async function refused() {
  const { client, server, close } = await pair();
  try {
    const data = patternBytes(4096, 5);
    const startedAt = performance.now();
    const asyncError = await client.writevZerocopy([data]).then(() => null, errorInfo);
    let syncError = null;
    try {
      client.writevZerocopySync([data]);
    } catch (error) {
      syncError = errorInfo(error);
    }
    const ms = Math.round(performance.now() - startedAt);
    const stats = client.stats;
    // The refusal must leave the connection intact: a plain write of the same bytes
    // arrives alone, with nothing of the refused sends before it.
    await client.writev([data]);
    client.close();
    const received = new Uint8Array(data.length + 1);
    const read = await server.readFull(received);
    const plainVerified = read === data.length && sameBytes(received.subarray(0, read), data);
    return { asyncError, syncError, ms, plainVerified, ...stats };
  } finally {
    close();
  }
}

try {
  const result = mode === "refused" ? await refused() : await stream(Number(countArg));
  console.log(JSON.stringify(result));
} catch (error) {
  console.log(JSON.stringify({ error: errorInfo(error) }));
  process.exitCode = 1;
}
