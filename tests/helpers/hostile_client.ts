/**
 * Raw multifd clients for hostile tests: they speak the wire format by hand (over a plain
 * SocketChannel) so they can say anything — garbage, forged or replayed INITs, malformed
 * packets — and a guarded destination region that detects any write outside its bounds.
 */
import { connect, Region, type SocketChannel } from "../../mod.ts";
import { signInit } from "../../src/multifd/auth.ts";
import {
  encodeInitFields,
  HELLO_BYTES,
  type Init,
  INIT_BYTES,
  INIT_FIELDS_BYTES,
  PAGE_SIZE,
  parseHello,
  parseReply,
  REPLY_BYTES,
  ReplyType,
  SESSION_ID_BYTES,
} from "../../src/multifd/wire.ts";
import { patternBytes } from "./pattern.ts";

/** Opens a plain TCP channel to the receiver; `ioTimeoutMs` bounds every blocked read/write. */
export function openRaw(port: number, ioTimeoutMs = 5_000): Promise<SocketChannel> {
  return connect({ hostname: "127.0.0.1", port, ioTimeoutMs, connectTimeoutMs: 5_000 });
}

/** Reads the receiver's HELLO and returns its nonce. */
export async function readHello(channel: SocketChannel): Promise<Uint8Array> {
  const hello = new Uint8Array(HELLO_BYTES);
  const got = await channel.readFull(hello);
  if (got < HELLO_BYTES) throw new Error(`HELLO cut short: ${got} bytes`);
  return parseHello(hello);
}

export function randomSessionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(SESSION_ID_BYTES));
}

/** A one-channel session's INIT fields for a region of `regionSize` bytes. */
export function oneChannelInit(regionSize: number, pagesPerPacket: number, sessionId = randomSessionId()): Init {
  return { sessionId, channelId: 0, channelCount: 1, pageSize: PAGE_SIZE, regionSize, pagesPerPacket };
}

/** INIT fields ‖ MAC for `nonce`, signed with `key` (the right secret or not). */
export async function signedInit(key: CryptoKey, nonce: Uint8Array, init: Init): Promise<Uint8Array> {
  const fields = encodeInitFields(init);
  const bytes = new Uint8Array(INIT_BYTES);
  bytes.set(fields);
  bytes.set(await signInit(key, nonce, fields), INIT_FIELDS_BYTES);
  return bytes;
}

/**
 * A raw client that completes the handshake with the right secret: HELLO, INIT ‖ MAC,
 * INIT_ACK. Returns the channel, ready for DATA packets.
 */
export async function authenticate(port: number, key: CryptoKey, init: Init, ioTimeoutMs = 5_000) {
  const channel = await openRaw(port, ioTimeoutMs);
  try {
    const nonce = await readHello(channel);
    await channel.writev([await signedInit(key, nonce, init)]);
    const reply = new Uint8Array(REPLY_BYTES);
    if (await channel.readFull(reply) < REPLY_BYTES) throw new Error("no INIT_ACK: the receiver closed");
    parseReply(reply, ReplyType.INIT_ACK);
    return channel;
  } catch (error) {
    channel.close();
    throw error;
  }
}

export type PeerEnd = "eof" | "reset" | "timeout" | "data" | "closed";

/**
 * Reads until the receiver ends the connection and says how: "eof" (FIN), "reset"
 * (ECONNRESET), "timeout" (nothing for the channel's ioTimeoutMs) or "data" (it sent
 * something instead). Never throws.
 */
export async function awaitPeerEnd(channel: SocketChannel): Promise<PeerEnd> {
  try {
    const got = await channel.readFull(new Uint8Array(1));
    return got === 0 ? "eof" : "data";
  } catch (error) {
    const e = error as Error & { code?: string };
    if (e.name === "TimeoutError") return "timeout";
    if (e.code === "ECONNRESET") return "reset";
    if (e.name === "ChannelClosedError") return "closed";
    throw error;
  }
}

/** Writes, ignoring the errors a peer that hung up causes (EPIPE, ECONNRESET). */
export async function writeIgnoringHangup(channel: SocketChannel, bytes: Uint8Array): Promise<boolean> {
  try {
    await channel.writev([bytes]);
    return true;
  } catch (error) {
    const e = error as Error & { code?: string };
    if (e.code === "EPIPE" || e.code === "ECONNRESET" || e.name === "ChannelClosedError") return false;
    throw error;
  }
}

/**
 * A destination in the middle of a larger allocation: `guardPages` pages before and after
 * it (the bytes after the region's last, possibly short, page are guarded too), all
 * filled with a known pattern. `dest` is a non-owning view (Region.fromDescriptor).
 */
export class GuardedRegion {
  readonly whole: Region;
  readonly dest: Region;
  /** Byte offset of the destination inside `whole`. */
  readonly start: number;
  /** The whole allocation's initial bytes. */
  readonly initial: Uint8Array;

  constructor(readonly destSize: number, readonly guardPages = 2, seed = 0x600d) {
    this.start = guardPages * PAGE_SIZE;
    const wholeSize = this.start + Math.ceil(destSize / PAGE_SIZE) * PAGE_SIZE + guardPages * PAGE_SIZE;
    this.whole = Region.allocate(wholeSize);
    this.initial = patternBytes(wholeSize, seed).slice();
    this.dest = Region.fromDescriptor({ address: this.whole.address + this.start, size: destSize });
    this.reset();
  }

  /** Restores the initial pattern everywhere. */
  reset(): void {
    this.whole.write(0, this.initial);
  }

  /** The destination's initial bytes. */
  initialDest(): Uint8Array {
    return this.initial.subarray(this.start, this.start + this.destSize);
  }

  /**
   * Compares the whole allocation with `expected` (default: the initial pattern); returns
   * undefined when equal, else where the first difference is. `loose` ranges (offsets in the
   * whole allocation) may hold either the initial or the expected byte.
   */
  diff(expected: Uint8Array = this.initial, loose: { at: number; bytes: Uint8Array }[] = []): string | undefined {
    const actual = this.whole.view();
    const allowed = new Map<number, number[]>();
    for (const { at, bytes } of loose) {
      for (let i = 0; i < bytes.length; i++) {
        const list = allowed.get(at + i) ?? [];
        list.push(bytes[i]);
        allowed.set(at + i, list);
      }
    }
    let first = -1;
    let count = 0;
    for (let i = 0; i < actual.length; i++) {
      if (actual[i] === expected[i]) continue;
      const alternatives = allowed.get(i);
      if (alternatives && (actual[i] === this.initial[i] || alternatives.includes(actual[i]))) continue;
      if (first < 0) first = i;
      count++;
    }
    if (first < 0) return undefined;
    const where = first < this.start
      ? `guard before the region (${this.start - first} bytes before it)`
      : first >= this.start + this.destSize
      ? `guard after the region (${first - this.start - this.destSize} bytes past its end)`
      : `region offset ${first - this.start} (page ${Math.floor((first - this.start) / PAGE_SIZE)})`;
    return `${count} byte(s) differ, first at ${where}: 0x${actual[first].toString(16)}, expected 0x${
      expected[first].toString(16)
    }`;
  }

  async close(): Promise<void> {
    await this.dest.close();
    await this.whole.close();
  }
}
