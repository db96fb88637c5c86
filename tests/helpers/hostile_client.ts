/**
 * Raw multifd clients for hostile tests: they speak the wire format by hand (over a plain
 * SocketChannel) so they can say anything — garbage, forged or replayed INITs, malformed
 * packets — and a guarded destination region that detects any write outside its bounds.
 */
import { connect, Region, type SocketChannel } from "../../mod.ts";
import {
  newNonce,
  type SecretKeys,
  type SessionKeys,
  sessionKeys,
  signInit,
  signVerdict,
  type Transcript,
  verifyInitAck,
  verifyResult,
} from "../../src/multifd/auth.ts";
import { CHECKSUM_BYTES } from "../../src/multifd/checksum.ts";
import {
  encodeInitFields,
  HELLO_BYTES,
  type Init,
  INIT_ACK_BYTES,
  INIT_BYTES,
  INIT_MAC_OFFSET,
  INIT_NONCE_OFFSET,
  MAC_BYTES,
  PAGE_SIZE,
  parseHello,
  parseReply,
  REPLY_BYTES,
  ReplyType,
  SESSION_ID_BYTES,
} from "../../src/multifd/wire.ts";
import { patternBytes } from "./pattern.ts";
import { concatBytes } from "../../util/bytes.ts";

/** Opens a plain TCP channel to the receiver; `ioTimeoutMs` bounds every blocked read/write. */
export function openRaw(port: number, ioTimeoutMs = 5_000): Promise<SocketChannel> {
  return connect({ hostname: "127.0.0.1", port, ioTimeoutMs, connectTimeoutMs: 5_000 });
}

/** Reads the receiver's HELLO and returns its nonce. */
export async function readHello(channel: SocketChannel): Promise<Uint8Array> {
  const hello = new Uint8Array(HELLO_BYTES);
  const got = await channel.readFull(hello);
  if (got < HELLO_BYTES) throw new Error(`HELLO cut short: ${got} bytes`);
  return parseHello(hello).nonce;
}

export function randomSessionId(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(SESSION_ID_BYTES));
}

/** A one-channel session's INIT fields for a region of `regionSize` bytes. */
export function oneChannelInit(regionSize: number, pagesPerPacket: number, sessionId = randomSessionId()): Init {
  return {
    sessionId,
    channelId: 0,
    channelCount: 1,
    pageSize: PAGE_SIZE,
    regionSize,
    pagesPerPacket,
    cipher: 0,
    checksum: 0,
  };
}

/** The transcript of an INIT made by {@link signedInit}. */
export function transcriptOf(receiverNonce: Uint8Array, initBytes: Uint8Array): Transcript {
  return {
    receiverNonce,
    senderNonce: initBytes.slice(INIT_NONCE_OFFSET, INIT_MAC_OFFSET),
    init: initBytes.slice(0, INIT_NONCE_OFFSET),
  };
}

/** INIT fields ‖ a fresh sender nonce ‖ MAC for the receiver's `nonce`, signed with `keys` (the right secret or not). */
export async function signedInit(keys: SecretKeys, nonce: Uint8Array, init: Init): Promise<Uint8Array> {
  const transcript = { receiverNonce: nonce, senderNonce: newNonce(), init: encodeInitFields(init) };
  const bytes = new Uint8Array(INIT_BYTES);
  bytes.set(transcript.init);
  bytes.set(transcript.senderNonce, INIT_NONCE_OFFSET);
  bytes.set(await signInit(keys, transcript), INIT_MAC_OFFSET);
  return bytes;
}

/** The keys of the session whose channel 0 had this handshake, to end it by hand (answerResult). */
export function sessionOf(keys: SecretKeys, receiverNonce: Uint8Array, initBytes: Uint8Array): Promise<SessionKeys> {
  return sessionKeys(keys, transcriptOf(receiverNonce, initBytes));
}

/**
 * A sender's end of stream by hand, once a RESULT reply was read into `reply`: reads the
 * checksum and MAC that follow it and checks the MAC (channel `channelId`), then, when a
 * `verdict` header is given (channel 0), sends it with its MAC over that result. Resolves
 * false when the receiver hung up before the verdict could go.
 */
export async function answerResult(
  channel: SocketChannel,
  session: SessionKeys,
  reply: Uint8Array,
  verdict?: Uint8Array,
  channelId = 0,
): Promise<boolean> {
  const rest = new Uint8Array(CHECKSUM_BYTES + MAC_BYTES);
  if (await channel.readFull(rest) < rest.length) throw new Error("RESULT cut short");
  const { bytes } = parseReply(reply, ReplyType.RESULT);
  const checksum = rest.subarray(0, CHECKSUM_BYTES);
  if (!await verifyResult(session, channelId, bytes, checksum, rest.subarray(CHECKSUM_BYTES))) {
    throw new Error("the RESULT's MAC is wrong");
  }
  if (!verdict) return true;
  const matched = new DataView(verdict.buffer, verdict.byteOffset).getUint32(28) === 1;
  const mac = await signVerdict(session, matched, bytes, checksum);
  return await writeIgnoringHangup(channel, concatBytes(verdict, mac));
}

/**
 * A raw client that completes the handshake with the right secret: HELLO, INIT ‖ MAC,
 * INIT_ACK ‖ MAC (checked). Returns the channel, ready for DATA packets.
 */
export async function authenticate(port: number, keys: SecretKeys, init: Init, ioTimeoutMs = 5_000) {
  return (await authenticateSession(port, keys, init, ioTimeoutMs)).channel;
}

/** {@link authenticate}, also returning the session's keys (a one-channel session: this is channel 0). */
export async function authenticateSession(port: number, keys: SecretKeys, init: Init, ioTimeoutMs = 5_000) {
  const channel = await openRaw(port, ioTimeoutMs);
  try {
    const nonce = await readHello(channel);
    const initBytes = await signedInit(keys, nonce, init);
    await channel.writev([initBytes]);
    const ack = new Uint8Array(INIT_ACK_BYTES);
    if (await channel.readFull(ack) < REPLY_BYTES) throw new Error("no INIT_ACK: the receiver closed");
    const reply = ack.subarray(0, REPLY_BYTES);
    parseReply(reply, ReplyType.INIT_ACK);
    if (!await verifyInitAck(keys, transcriptOf(nonce, initBytes), reply, ack.subarray(REPLY_BYTES))) {
      throw new Error("the INIT_ACK's MAC is wrong");
    }
    return { channel, session: await sessionOf(keys, nonce, initBytes) };
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
