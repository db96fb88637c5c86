/**
 * Session admission on the receiving side: accepting connections from anyone, and letting
 * only the channels of one authenticated session through, while strangers can make the
 * receiver hold no more than a fixed amount:
 *
 * - at most `maxPendingHandshakes` connections in their handshake at once (a new one
 *   evicts the oldest idle one: a real sender finishes within a round trip, idlers cannot
 *   lock it out), each for at most `handshakeTimeoutMs` in all, however it trickles bytes;
 * - a refused or evicted connection is closed and forgotten at once: it leaves a counter
 *   increment behind, nothing else;
 * - the accept loop survives running out of fds or memory (EMFILE, ENFILE, ENOBUFS,
 *   ENOMEM): it backs off and tries again rather than dying.
 * @module
 */
import { Errno, native, Poll } from "../../ffi/mod.ts";
import { ChannelClosedError, SocketError, TimeoutError } from "../errors.ts";
import type { Listener } from "../listener.ts";
import type { SocketChannel } from "../socket_channel.ts";
import { sameBytes } from "../../util/bytes.ts";
import { newNonce, type SecretKeys, type Transcript, verifyInit } from "./auth.ts";
import { fastAegisChecksum } from "./checksum.ts";
import {
  encodeHello,
  encodeReply,
  HelloFlag,
  type Init,
  INIT_BYTES,
  INIT_FIELDS_BYTES,
  INIT_MAC_OFFSET,
  INIT_NONCE_OFFSET,
  parseInitFields,
  ProtocolError,
  RefusalCode,
  ReplyType,
  TransferRefusedError,
} from "./wire.ts";

/** Pause before accepting again after the process ran out of fds or memory. */
export const ACCEPT_BACKOFF_MS = 100;
const RESOURCE_ERRNOS: readonly number[] = [Errno.EMFILE, Errno.ENFILE, Errno.ENOBUFS, Errno.ENOMEM];

export interface AdmissionLimits {
  keys: SecretKeys;
  /** Largest region accepted. */
  maxSize: number;
  handshakeTimeoutMs: number;
  maxPendingHandshakes: number;
  /** Longest wait for the first authenticated channel (-1: none). */
  acceptTimeoutMs: number;
  /** Refuse a session whose channels are not encrypted. */
  requireEncryption: boolean;
}

/** The channels of one session, in channel order, its INIT, and each channel's handshake transcript. */
export interface Session {
  init: Init;
  channels: SocketChannel[];
  /** What each channel's INIT_ACK must prove (auth.ts), in channel order. */
  transcripts: Transcript[];
}

export class Admission {
  /** Connections closed because they failed authentication, spoke garbage, or were evicted. */
  rejected = 0;
  /** Accepts that failed for lack of fds or memory and were retried. */
  acceptRetries = 0;
  readonly #listener: Listener;
  readonly #limits: AdmissionLimits;
  /** Every connection held now (in its handshake, or joined and not yet handed over). */
  readonly #held = new Set<SocketChannel>();
  /** What HELLO tells every sender about this receiver (wire.ts HelloFlag). */
  readonly #helloFlags = fastAegisChecksum() ? HelloFlag.FAST_AEGIS_CHECKSUM : 0;
  #ended = false;

  constructor(listener: Listener, limits: AdmissionLimits) {
    this.#listener = listener;
    this.#limits = limits;
  }

  /** How many connections are held now (bounded by maxPendingHandshakes + the session's channels). */
  get held(): number {
    return this.#held.size;
  }

  /**
   * Accepts until every channel of the first authenticated session has joined, then stops
   * accepting and hands the session's channels over (the caller owns them from then on).
   */
  async run(): Promise<Session> {
    const { maxSize, handshakeTimeoutMs, maxPendingHandshakes, acceptTimeoutMs, requireEncryption } = this.#limits;
    let session: Init | undefined;
    const channels: SocketChannel[] = [];
    const transcripts: Transcript[] = [];
    /** Connections still waiting on their peer in the handshake, oldest first. */
    const pending = new Set<SocketChannel>();
    const timers: ReturnType<typeof setTimeout>[] = [];
    let complete: () => void = () => {};
    let fail: (error: Error) => void = () => {};
    const done = new Promise<void>((resolve, reject) => ((complete = resolve), (fail = reject)));

    if (acceptTimeoutMs >= 0) {
      timers.push(setTimeout(() => {
        if (!session) fail(new TimeoutError("receive", acceptTimeoutMs, "no authenticated sender connected"));
      }, acceptTimeoutMs));
    }

    const admit = async (channel: SocketChannel) => {
      // Once its INIT has arrived a connection no longer waits on its peer: it leaves the
      // pending set, so a newer connection cannot evict it while its MAC is checked (an
      // evicted, closed channel would join the session and fail the whole receive).
      const handshaken = await this.#handshake(channel, () => pending.delete(channel));
      if (!handshaken) return;
      const { init, transcript } = handshaken;
      const refuse = (code: number) => this.#refuse(channel, code);
      if (!session) {
        // An authenticated sender that asks for what this receiver will not do: both sides
        // fail with the reason, rather than wait for another sender.
        const refusal = init.regionSize > maxSize
          ? RefusalCode.REGION_TOO_LARGE
          : requireEncryption && init.cipher === 0
          ? RefusalCode.ENCRYPTION_REQUIRED
          : 0;
        if (refusal !== 0) {
          await refuse(refusal);
          throw new TransferRefusedError(refusal);
        }
        session = init;
        // Once a session has begun, all its channels must join within the handshake limit.
        timers.push(setTimeout(
          () => fail(new TimeoutError("session set-up", handshakeTimeoutMs, "not every channel connected")),
          handshakeTimeoutMs,
        ));
      } else if (!sameBytes(init.sessionId, session.sessionId)) {
        return refuse(RefusalCode.SESSION_MISMATCH);
      } else if (
        init.channelCount !== session.channelCount || init.regionSize !== session.regionSize ||
        init.pagesPerPacket !== session.pagesPerPacket || init.cipher !== session.cipher ||
        init.checksum !== session.checksum
      ) {
        await refuse(RefusalCode.BAD_PARAMETERS);
        throw new ProtocolError("init", "channels of one session disagree on its parameters");
      }
      if (channels[init.channelId]) return refuse(RefusalCode.DUPLICATE_CHANNEL);
      channels[init.channelId] = channel;
      transcripts[init.channelId] = transcript;
      if (channels.filter(Boolean).length === session.channelCount) complete();
    };

    const acceptLoop = async () => {
      while (!this.#ended) {
        let channel: SocketChannel;
        try {
          channel = await this.#listener.accept();
        } catch (error) {
          if (this.#ended || this.#listener.closed) return;
          if (!(error instanceof SocketError) || !RESOURCE_ERRNOS.includes(error.errno)) throw error;
          this.acceptRetries++;
          await new Promise((resolve) => setTimeout(resolve, ACCEPT_BACKOFF_MS));
          continue;
        }
        if (pending.size >= maxPendingHandshakes) {
          const victim = evictionVictim(pending);
          pending.delete(victim);
          this.#drop(victim);
        }
        pending.add(channel);
        this.#held.add(channel);
        admit(channel).catch(fail).finally(() => {
          pending.delete(channel);
          if (channel.closed) this.#held.delete(channel);
        });
      }
    };
    acceptLoop().catch(fail);
    try {
      await done;
      for (const channel of channels) this.#held.delete(channel);
      return { init: session!, channels, transcripts };
    } finally {
      for (const timer of timers) clearTimeout(timer);
      this.close();
    }
  }

  /** Stops accepting and closes every connection still held. */
  close(): void {
    this.#ended = true;
    this.#listener.close();
    for (const channel of this.#held) channel.close();
    this.#held.clear();
  }

  /**
   * HELLO, INIT, MAC check. Resolves with the INIT and transcript of an authenticated
   * channel; for a connection that fails authentication or speaks garbage, closes it and
   * resolves undefined (it never disturbs the transfer). An authenticated but malformed
   * INIT throws.
   */
  async #handshake(
    channel: SocketChannel,
    received: () => void,
  ): Promise<{ init: Init; transcript: Transcript } | undefined> {
    const nonce = newNonce();
    const bytes = new Uint8Array(INIT_BYTES);
    // One deadline for the whole handshake: trickling bytes does not extend it.
    const deadline = setTimeout(() => channel.close(), this.#limits.handshakeTimeoutMs);
    try {
      await channel.writev([encodeHello(nonce, this.#helloFlags)]);
      if (await channel.readFull(bytes) < INIT_BYTES) throw new ChannelClosedError("closed during handshake");
      received();
    } catch {
      this.#drop(channel);
      return undefined;
    } finally {
      clearTimeout(deadline);
    }
    const transcript: Transcript = {
      receiverNonce: nonce,
      senderNonce: bytes.slice(INIT_NONCE_OFFSET, INIT_MAC_OFFSET),
      init: bytes.slice(0, INIT_FIELDS_BYTES),
    };
    if (!await verifyInit(this.#limits.keys, transcript, bytes.subarray(INIT_MAC_OFFSET))) {
      this.#drop(channel);
      return undefined;
    }
    // Closed meanwhile (evicted or past its deadline just as its INIT arrived): it is out,
    // like any connection dropped in its handshake. Joined, it would fail the whole receive.
    if (channel.closed) {
      this.#drop(channel);
      return undefined;
    }
    try {
      return { init: parseInitFields(transcript.init), transcript };
    } catch (error) {
      await this.#refuse(channel, RefusalCode.BAD_PARAMETERS);
      throw error;
    }
  }

  /** Closes a connection that will not join, and forgets it. */
  #drop(channel: SocketChannel): void {
    if (this.#held.delete(channel)) this.rejected++;
    channel.close();
  }

  async #refuse(channel: SocketChannel, code: number): Promise<void> {
    try {
      await channel.writev([encodeReply({ type: ReplyType.ERROR, value: 0n, bytes: 0, status: code })]);
    } catch {
      // The peer may already be gone; it is refused either way.
    }
    channel.close();
    this.#held.delete(channel);
  }
}

/**
 * The connection to evict when every handshake slot is taken: the oldest one with nothing
 * waiting to be read (an idler: a real sender answers within a round trip, so connections
 * that idle cannot lock it out by holding every slot); if every one has bytes waiting —
 * a sender's INIT this thread has not read yet must not be thrown away — the oldest.
 */
function evictionVictim(pending: Set<SocketChannel>): SocketChannel {
  for (const channel of pending) {
    if (native.zc_poll_one(channel.fd, Poll.IN, 0) === 0) return channel;
  }
  return pending.values().next().value!;
}
