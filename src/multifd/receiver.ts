/**
 * The receiving side of a multifd transfer: accepts the N authenticated channels of one
 * session, then each channel's Worker receives straight into the destination region.
 *
 * ```ts
 * const receiver = await MultifdReceiver.listen({ hostname: "0.0.0.0", port: 4444, secret });
 * const result = await receiver.receive((size) => Region.createFile("guest.img", size));
 * ```
 * @module
 */
import { native } from "../../ffi/mod.ts";
import { ChannelClosedError, InvalidArgumentError, TimeoutError } from "../errors.ts";
import { listen, type Listener } from "../listener.ts";
import type { Region } from "../region.ts";
import {
  abortSocket,
  DEFAULT_IO_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_IDLE_S,
  DEFAULT_USER_TIMEOUT_MS,
  type SocketChannel,
} from "../socket_channel.ts";
import { importSecret, newNonce, type Secret, verifyInit } from "./auth.ts";
import { assignBlocks, combineBlockHashes } from "./checksum.ts";
import type { ChannelConfig, FromReceiver, ToReceiver } from "./messages.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, TransferAbortedError } from "./sender.ts";
import { Control, counterIndex, createSharedState, readCounters, type SharedState } from "./shared_state.ts";
import { hex, round3, type TransferStats, transferStats } from "./stats.ts";
import {
  encodeHello,
  encodeReply,
  type Init,
  INIT_BYTES,
  INIT_FIELDS_BYTES,
  parseInitFields,
  ProtocolError,
  RefusalCode,
  ReplyType,
  TransferRefusedError,
} from "./wire.ts";
import { WorkerPool } from "./worker_pool.ts";

/** Default largest region a receiver accepts: 64 GiB. */
export const DEFAULT_MAX_REGION_BYTES = 64 * 2 ** 30;
/** Default cap on connections still in their handshake (slow-loris guard). */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 16;
const WORKER_GRACE_MS = 5_000;

export interface ReceiverOptions {
  /** Address to listen on. Default "127.0.0.1". */
  hostname?: string;
  /** Port; 0 (default) picks one, see {@link MultifdReceiver.port}. */
  port?: number;
  /** Shared secret the sender also has (≥ 16 bytes). */
  secret: Secret;
  /** Largest region accepted, in bytes. Default {@link DEFAULT_MAX_REGION_BYTES}. */
  maxSize?: number;
  /** Per-channel limits, as in the channel options of `connect` (src/socket_channel.ts). */
  ioTimeoutMs?: number;
  userTimeoutMs?: number;
  keepaliveIdleS?: number;
  /** Limit for a connection to complete its handshake. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Connections allowed in their handshake at once; beyond it the oldest is closed. Default 16. */
  maxPendingHandshakes?: number;
}

export interface ReceiverResult extends TransferStats {
  /** The sender confirmed that its checksum equals ours. */
  verified: boolean;
  checksum: string;
  /** Connections closed because they failed authentication or spoke garbage. */
  rejectedConnections: number;
}

/** Where received data goes: a region, or a function making one once the size is known. */
export type Destination = Region | ((size: number) => Region | Promise<Region>);

export class MultifdReceiver {
  readonly #listener: Listener;
  readonly #key: CryptoKey;
  readonly #maxSize: number;
  readonly #ioTimeoutMs: number;
  readonly #userTimeoutMs: number;
  readonly #keepaliveIdleS: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxPending: number;
  #pool: WorkerPool<ToReceiver, FromReceiver> | undefined;
  #state: SharedState | undefined;
  #fds: number[] = [];
  /** Channels accepted during the handshake, closed if the transfer fails before detaching them. */
  #accepted: SocketChannel[] = [];
  #region: Region | undefined;
  #failure: Error | undefined;
  #failed: (error: Error) => void = () => {};
  #finished = false;
  #rounds = 0;
  #receiving = false;
  #started = 0;
  #setupSeconds = 0;
  #transferSeconds = 0;
  #rejected = 0;

  private constructor(listener: Listener, key: CryptoKey, options: ReceiverOptions) {
    this.#listener = listener;
    this.#key = key;
    this.#maxSize = options.maxSize ?? DEFAULT_MAX_REGION_BYTES;
    this.#ioTimeoutMs = options.ioTimeoutMs ?? DEFAULT_IO_TIMEOUT_MS;
    this.#userTimeoutMs = options.userTimeoutMs ?? DEFAULT_USER_TIMEOUT_MS;
    this.#keepaliveIdleS = options.keepaliveIdleS ?? DEFAULT_KEEPALIVE_IDLE_S;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#maxPending = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
  }

  /** Starts listening (nothing is accepted until {@link receive}). */
  static async listen(options: ReceiverOptions): Promise<MultifdReceiver> {
    if (typeof options !== "object" || options === null) {
      throw new InvalidArgumentError("receiver options are required");
    }
    const maxSize = options.maxSize ?? DEFAULT_MAX_REGION_BYTES;
    if (!Number.isSafeInteger(maxSize) || maxSize < 0) throw new InvalidArgumentError(`bad maxSize ${maxSize}`);
    const key = await importSecret(options.secret);
    const listener = await listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
    return new MultifdReceiver(listener, key, options);
  }

  /** The port the receiver listens on. */
  get port(): number {
    return this.#listener.port;
  }

  /**
   * Accepts one session's channels and receives it into `destination`; resolves after the
   * end of stream on every channel, the destination synced (files: fsync) and checksums
   * exchanged. The region is not closed.
   */
  async receive(destination: Destination): Promise<ReceiverResult> {
    if (this.#receiving) throw new InvalidArgumentError("a receiver handles one transfer");
    this.#receiving = true;
    const listening = performance.now();
    const aborted = new Promise<never>((_, reject) => (this.#failed = reject));
    aborted.catch(() => {});
    try {
      const { init, channels } = await Promise.race([this.#acceptSession(), aborted]);
      this.#listener.close();
      this.#setupSeconds = (performance.now() - listening) / 1000;
      const region = await Promise.race([this.#prepare(destination, init, channels), aborted]);
      return await Promise.race([this.#run(region, init, channels), aborted]);
    } catch (error) {
      await this.#abort(error as Error);
      throw this.#failure ?? error;
    }
  }

  /** Aborts: connections are shut down (the sender fails too), Workers exit. */
  abort(reason = "aborted by the receiver"): Promise<void> {
    const error = new TransferAbortedError(reason);
    this.#failed(error);
    return this.#abort(error);
  }

  /** Stops listening, if no transfer is running. */
  close(): void {
    this.#listener.close();
  }

  /** Counters so far. */
  get stats(): TransferStats {
    const rows = this.#state ? readCounters(this.#state, this.#fds.length) : [];
    const seconds = this.#transferSeconds || (this.#started ? (performance.now() - this.#started) / 1000 : 0);
    return { ...transferStats(rows, seconds, this.#rounds, false), setupSeconds: round3(this.#setupSeconds) };
  }

  /** Payload bytes received so far. */
  get bytesReceived(): number {
    let total = 0;
    for (let id = 0; id < this.#fds.length; id++) total += this.#state?.counters[counterIndex(id, "bytes")] ?? 0;
    return total;
  }

  /** Accepts until every channel of the first authenticated session has joined. */
  async #acceptSession(): Promise<{ init: Init; channels: SocketChannel[] }> {
    let session: Init | undefined;
    const channels: SocketChannel[] = [];
    /** Connections still in their handshake, oldest first. */
    const pending = new Set<SocketChannel>();
    let sessionTimer: ReturnType<typeof setTimeout> | undefined;
    let complete: () => void = () => {};
    let fail: (error: Error) => void = () => {};
    const done = new Promise<void>((resolve, reject) => ((complete = resolve), (fail = reject)));

    const admit = async (channel: SocketChannel) => {
      this.#accepted.push(channel);
      // Once its INIT has arrived a connection no longer waits on its peer: it leaves the
      // pending set, so a newer connection cannot evict it while its MAC is checked (an
      // evicted, closed channel would join the session and fail the whole receive).
      const init = await this.#handshake(channel, () => pending.delete(channel));
      if (!init) return;
      const refuse = (code: number) => this.#refuse(channel, code);
      if (!session) {
        if (init.regionSize > this.#maxSize) {
          await refuse(RefusalCode.REGION_TOO_LARGE);
          throw new TransferRefusedError(RefusalCode.REGION_TOO_LARGE);
        }
        session = init;
        // Once a session has begun, all its channels must join within the handshake limit.
        sessionTimer = setTimeout(
          () => fail(new TimeoutError("session set-up", this.#handshakeTimeoutMs, "not every channel connected")),
          this.#handshakeTimeoutMs,
        );
      } else if (!sameBytes(init.sessionId, session.sessionId)) {
        return refuse(RefusalCode.SESSION_MISMATCH);
      } else if (
        init.channelCount !== session.channelCount || init.regionSize !== session.regionSize ||
        init.pagesPerPacket !== session.pagesPerPacket
      ) {
        await refuse(RefusalCode.BAD_PARAMETERS);
        throw new ProtocolError("init", "channels of one session disagree on its parameters");
      }
      if (channels[init.channelId]) return refuse(RefusalCode.DUPLICATE_CHANNEL);
      channels[init.channelId] = channel;
      if (channels.filter(Boolean).length === session.channelCount) complete();
    };

    const acceptLoop = (async () => {
      for (;;) {
        const channel = await this.#listener.accept();
        if (pending.size >= this.#maxPending) {
          // Evict the oldest: a real sender finishes its handshake within a round trip, so
          // connections that idle cannot lock it out by holding every slot.
          const oldest = pending.values().next().value!;
          pending.delete(oldest);
          oldest.close();
        }
        pending.add(channel);
        admit(channel).catch(fail).finally(() => pending.delete(channel));
      }
    })();
    acceptLoop.catch(() => {}); // ends with ChannelClosedError when the listener closes
    await done;
    clearTimeout(sessionTimer);
    return { init: session!, channels };
  }

  /**
   * HELLO, INIT, MAC check. Resolves with the INIT of an authenticated channel; for a
   * connection that fails authentication or speaks garbage, closes it and resolves
   * undefined (it never disturbs the transfer). An authenticated but malformed INIT throws.
   */
  async #handshake(channel: SocketChannel, received: () => void): Promise<Init | undefined> {
    const nonce = newNonce();
    const bytes = new Uint8Array(INIT_BYTES);
    // One deadline for the whole handshake: trickling bytes does not extend it.
    const deadline = setTimeout(() => channel.close(), this.#handshakeTimeoutMs);
    try {
      await channel.writev([encodeHello(nonce)]);
      if (await channel.readFull(bytes) < INIT_BYTES) throw new ChannelClosedError("closed during handshake");
      received();
    } catch {
      this.#rejected++;
      channel.close();
      return undefined;
    } finally {
      clearTimeout(deadline);
    }
    const fields = bytes.subarray(0, INIT_FIELDS_BYTES);
    if (!await verifyInit(this.#key, nonce, fields, bytes.subarray(INIT_FIELDS_BYTES))) {
      this.#rejected++;
      channel.close();
      return undefined;
    }
    // Closed meanwhile (evicted or past its deadline just as its INIT arrived): it is out,
    // like any connection dropped in its handshake. Joined, it would fail the whole receive.
    if (channel.closed) {
      this.#rejected++;
      return undefined;
    }
    try {
      return parseInitFields(fields);
    } catch (error) {
      await this.#refuse(channel, RefusalCode.BAD_PARAMETERS);
      throw error;
    }
  }

  async #refuse(channel: SocketChannel, code: number): Promise<void> {
    try {
      await channel.writev([encodeReply({ type: ReplyType.ERROR, value: 0n, bytes: 0, status: code })]);
    } catch {
      // The peer may already be gone; it is refused either way.
    }
    channel.close();
  }

  async #prepare(destination: Destination, init: Init, channels: SocketChannel[]): Promise<Region> {
    let region: Region;
    try {
      region = typeof destination === "function" ? await destination(init.regionSize) : destination;
      if (region.size !== init.regionSize) {
        throw new InvalidArgumentError(`destination is ${region.size} bytes, the sender's region ${init.regionSize}`);
      }
      region.retain();
    } catch (error) {
      await Promise.all(channels.map((c) => this.#refuse(c, RefusalCode.DESTINATION_FAILED)));
      throw error;
    }
    this.#region = region;
    const ack = encodeReply({ type: ReplyType.INIT_ACK, value: 0n, bytes: 0, status: 0 });
    await Promise.all(channels.map((channel) => channel.writev([ack])));
    this.#fds = channels.map((channel) => channel.detach());
    return region;
  }

  async #run(region: Region, init: Init, channels: SocketChannel[]): Promise<ReceiverResult> {
    const count = channels.length;
    const state = (this.#state = createSharedState(count));
    const pool = await WorkerPool.start<ToReceiver, FromReceiver>(
      new URL("./receiver_worker.ts", import.meta.url),
      count,
      (error) => this.#failed(error),
    );
    if (this.#finished) {
      // Aborted while the Workers started: #abort has closed the fds already (their numbers
      // may belong to other files by now), so they must not reach a Worker.
      await pool.shutdown(0);
      throw this.#failure;
    }
    this.#pool = pool;
    this.#started = performance.now();
    this.#fds.forEach((fd, channelId) => {
      const config: ChannelConfig = {
        channelId,
        pageSize: init.pageSize,
        pagesPerPacket: init.pagesPerPacket,
        ioTimeoutMs: this.#ioTimeoutMs,
        flushTimeoutMs: this.#ioTimeoutMs,
        userTimeoutMs: this.#userTimeoutMs,
        keepaliveIdleS: this.#keepaliveIdleS,
      };
      pool.post(channelId, { kind: "start", fd, region: region.descriptor, state, config });
    });

    // Each step, every channel reports either a sync (barrier) or the end of stream.
    for (;;) {
      const events = await pool.all("sync", "ended");
      if (events.every((e) => e.kind === "ended")) break;
      if (events.some((e) => e.kind === "ended")) {
        throw new ProtocolError("packet.type", "END on some channels while others reached a SYNC");
      }
      this.#rounds++;
      Atomics.add(state.control, Control.BARRIER, 1);
      Atomics.notify(state.control, Control.BARRIER);
    }
    this.#transferSeconds = (performance.now() - this.#started) / 1000;
    region.sync();

    const checksumStarted = performance.now();
    assignBlocks(region.size, count).forEach((blocks, id) => pool.post(id, { kind: "checksum", blocks }));
    const hashes: bigint[] = [];
    for (const reply of await pool.all("hashes")) reply.blocks.forEach((b, i) => (hashes[b] = reply.hashes[i]));
    const checksum = combineBlockHashes(hashes, region.size);
    const checksumSeconds = (performance.now() - checksumStarted) / 1000;

    const stats = this.stats;
    for (let id = 0; id < count; id++) {
      pool.post(id, { kind: "result", checksum, bytes: stats.bytes, awaitVerdict: id === 0 });
    }
    const done = await pool.all("done");
    this.#finished = true;
    await pool.shutdown(WORKER_GRACE_MS);
    for (const fd of this.#fds) native.zc_close(fd);
    region.release();
    return {
      ...stats,
      checksumSeconds: round3(checksumSeconds),
      verified: done[0].verdict === true,
      checksum: hex(checksum),
      rejectedConnections: this.#rejected,
    };
  }

  async #abort(error: Error): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    this.#failure ??= error;
    this.#listener.close();
    if (this.#state) {
      Atomics.store(this.#state.control, Control.ABORT, 1);
      Atomics.add(this.#state.control, Control.BARRIER, 1);
      Atomics.notify(this.#state.control, Control.BARRIER);
    }
    for (const channel of this.#accepted) channel.close();
    // This thread owns every detached fd until it closes them below (Workers never close
    // one), so no fd number can have been reused: shutting all down wakes every Worker.
    for (const fd of this.#fds) abortSocket(fd);
    await this.#pool?.shutdown(WORKER_GRACE_MS);
    for (const fd of this.#fds) native.zc_close(fd);
    this.#region?.release();
    this.#region = undefined;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
