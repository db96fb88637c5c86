/**
 * The receiving side of a multifd transfer: admits the N authenticated channels of one
 * session (src/multifd/admission.ts), then each channel's Worker receives straight into
 * the destination region.
 *
 * ```ts
 * const receiver = await MultifdReceiver.listen({ hostname: "0.0.0.0", port: 4444, secret });
 * const result = await receiver.receive((size) => Region.createFile("guest.img", size));
 * ```
 * @module
 */
import { AuthenticationError, ChannelClosedError, InvalidArgumentError, TransferAbortedError } from "../errors.ts";
import { checkPort, listen, type Listener } from "../listener.ts";
import { booleanOption, integerOption, timeoutMs } from "../options.ts";
import type { Region } from "../region.ts";
import { type ChannelOptions, resolveChannelOptions, type ResolvedChannelOptions } from "../channel_options.ts";
import type { SocketChannel } from "../socket_channel.ts";
import { Admission, type AdmissionLimits, type Session } from "./admission.ts";
import { cipherName } from "./aead.ts";
import { type ChecksumAlgorithm, checksumAlgorithmOf } from "./checksum.ts";
import type { ChannelEncryption } from "./codec.ts";
import {
  channelEncryption,
  importSecret,
  type Secret,
  type SecretKeys,
  type SessionKeys,
  sessionKeys,
  signInitAck,
  signResult,
  verifyVerdict,
} from "./auth.ts";
import type { ChannelConfig, FromReceiver, ToReceiver } from "./messages.ts";
import { Control } from "./shared_state.ts";
import { type TransferStats, transferStats } from "./stats.ts";
import { toHex } from "../../util/format.ts";
import { Transfer } from "./transfer.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  encodeReply,
  type Init,
  MAX_REGION_BYTES,
  ProtocolError,
  RefusalCode,
  ReplyType,
} from "./wire.ts";
import { WorkerPool } from "./worker_pool.ts";

/** Default largest region a receiver accepts: 64 GiB. */
export const DEFAULT_MAX_REGION_BYTES = 64 * 2 ** 30;
/** Default cap on connections still in their handshake (slow-loris guard). */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 64;
/** Most connections that may be allowed in their handshake at once. */
export const MAX_PENDING_HANDSHAKES = 1024;

/**
 * Where a {@link MultifdReceiver} listens, the secret senders must prove, and the limits
 * on what a sender (or a stranger) can make it do. Every option is checked before it
 * listens. `ioTimeoutMs`, `userTimeoutMs` and `keepaliveIdleS` apply to every channel, as
 * for `connect` (ChannelOptions), with the same defaults; `ioTimeoutMs` also bounds the
 * wait at a sync barrier.
 *
 * @example Accept up to 256 GiB on every interface, waiting at most an hour for the sender
 * ```ts
 * import { MultifdReceiver, type ReceiverOptions } from "zerocopy-multifd";
 *
 * const options: ReceiverOptions = {
 *   hostname: "0.0.0.0",
 *   port: 4444,
 *   secret: "a shared secret of at least 16 bytes",
 *   maxSize: 256 * 2 ** 30,
 *   acceptTimeoutMs: 3_600_000,
 * };
 * const receiver = await MultifdReceiver.listen(options);
 * ```
 */
export interface ReceiverOptions extends Pick<ChannelOptions, "ioTimeoutMs" | "userTimeoutMs" | "keepaliveIdleS"> {
  /** Address to listen on. Default "127.0.0.1". */
  hostname?: string;
  /** Port; 0 (default) picks one, see {@link MultifdReceiver.port}. */
  port?: number;
  /** Shared secret the sender also has (≥ 16 bytes). */
  secret: Secret;
  /** Largest region accepted, in bytes, up to MAX_REGION_BYTES (4 TiB). Default {@link DEFAULT_MAX_REGION_BYTES}. */
  maxSize?: number;
  /** Limit for a connection to complete its handshake, and for a whole session to connect, in ms. Default 10 s; no "no limit". */
  handshakeTimeoutMs?: number;
  /** Connections allowed in their handshake at once (1..1024); beyond it the oldest idle one is closed. Default 64. */
  maxPendingHandshakes?: number;
  /**
   * Longest {@link MultifdReceiver.receive} waits for the first authenticated channel, in
   * ms; then it rejects with TimeoutError. Default -1: no limit (a receiver waits for its
   * sender, as QEMU's `-incoming`); what strangers can make it hold is bounded regardless.
   */
  acceptTimeoutMs?: number;
  /**
   * Accept encrypted senders only (`encrypt` on the sender): a sender asking for plain
   * packets is refused (TransferRefusedError on both sides). Default false: the sender
   * chooses; an encrypted session is received encrypted either way.
   */
  encrypt?: boolean;
}

/**
 * What {@link MultifdReceiver.receive} resolves with: the transfer's statistics, whether
 * the region now holds exactly what the sender had, and what was refused on the way.
 *
 * @example Use the destination only once it is verified
 * ```ts
 * import { MultifdReceiver, Region } from "zerocopy-multifd";
 *
 * const secret = "a shared secret of at least 16 bytes";
 * const receiver = await MultifdReceiver.listen({ hostname: "0.0.0.0", port: 4444, secret });
 * const result = await receiver.receive((size) => Region.createFile("guest.img", size));
 * if (!result.verified) throw new Error("guest.img differs from the source");
 * console.log(`${result.bytes} bytes, ${result.rejectedConnections} connections refused`);
 * ```
 */
export interface ReceiverResult extends TransferStats {
  /** The sender confirmed that its checksum equals ours. */
  verified: boolean;
  /** This side's checksum of the received region (16 hex digits). */
  checksum: string;
  /** The MAC the checksums were computed with (the sender's choice: SenderOptions.checksum). */
  checksumAlgorithm: ChecksumAlgorithm;
  /** Connections closed because they failed authentication, spoke garbage or were evicted. */
  rejectedConnections: number;
  /** Accepts that failed for lack of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) and were retried. */
  acceptRetries: number;
}

/** Where received data goes: a region, or a function making one once the size is known. */
export type Destination = Region | ((size: number) => Region | Promise<Region>);

interface ReceiverConfig {
  limits: Omit<AdmissionLimits, "keys">;
  channel: ResolvedChannelOptions;
}

/**
 * The destination of a multifd transfer: listens, admits the authenticated channels of
 * one {@link MultifdSender} session (refusing strangers, wrong secrets and other
 * sessions without disturbing it), receives every page straight into the destination
 * {@link Region}, and verifies the copy by checksum.
 *
 * @example Receive a file from a sender
 * ```ts
 * import { MultifdReceiver, Region } from "zerocopy-multifd";
 *
 * const receiver = await MultifdReceiver.listen({
 *   hostname: "0.0.0.0",
 *   port: 4444,
 *   secret: "a shared secret of at least 16 bytes",
 * });
 * console.log("listening on port", receiver.port);
 * let region: Region | undefined;
 * const result = await receiver.receive((size) => (region = Region.createFile("guest.img", size)));
 * console.log(result.verified, result.GBps);
 * await region?.close(); // the receiver does not close the destination
 * ```
 */
export class MultifdReceiver {
  readonly #listener: Listener;
  readonly #config: ReceiverConfig;
  readonly #admission: Admission;
  #transfer: Transfer | undefined;
  #failure: Error | undefined;
  #failed: (error: Error) => void = () => {};
  #aborting: Promise<void> | undefined;
  #receiving = false;
  /** When listening began: set-up lasts until the channel Workers run. */
  #listening = 0;

  readonly #keys: SecretKeys;
  private constructor(listener: Listener, keys: SecretKeys, config: ReceiverConfig) {
    this.#listener = listener;
    this.#config = config;
    this.#keys = keys;
    this.#admission = new Admission(listener, { keys, ...config.limits });
  }

  /** Validates every option, then starts listening (nothing is accepted until {@link receive}). */
  static async listen(options: ReceiverOptions): Promise<MultifdReceiver> {
    const config = receiverConfig(options);
    const keys = await importSecret(options.secret);
    const listener = await listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
    return new MultifdReceiver(listener, keys, config);
  }

  /** The port the receiver listens on. */
  get port(): number {
    return this.#listener.port;
  }

  /**
   * Accepts one session's channels and receives it into `destination`; resolves after the
   * end of stream on every channel, the destination synced (files: fsync) and checksums
   * exchanged. The region is not closed. When it rejects, every Worker has exited and every
   * fd of the transfer is closed.
   */
  async receive(destination: Destination): Promise<ReceiverResult> {
    if (this.#receiving) throw new InvalidArgumentError("a receiver handles one transfer");
    if (this.#failure) throw this.#failure;
    if (this.#listener.closed) throw new ChannelClosedError("the receiver is closed");
    this.#receiving = true;
    this.#listening = performance.now();
    const aborted = new Promise<never>((_, reject) => (this.#failed = reject));
    aborted.catch(() => {});
    try {
      const session = await Promise.race([this.#admission.run(), aborted]);
      const { init } = session;
      const transfer = (this.#transfer = new Transfer(init.channelCount, cipherName(init.cipher) ?? "none"));
      const region = await Promise.race([this.#prepare(destination, session, transfer), aborted]);
      const keys = await sessionKeys(this.#keys, session.transcripts[0]);
      const encryption = await channelEncryption(this.#keys, init.cipher, session.transcripts, "receive");
      return await Promise.race([this.#run(region, init, transfer, keys, encryption), aborted]);
    } catch (error) {
      await this.#abort(error as Error);
      throw this.#failure ?? error;
    }
  }

  /**
   * Aborts: connections are shut down (the sender fails too), Workers exit, a pending
   * {@link receive} rejects with TransferAbortedError. Resolves once every Worker has
   * exited and every fd is closed. After a transfer has ended, it does nothing.
   */
  abort(reason: string = "aborted by the receiver"): Promise<void> {
    const error = new TransferAbortedError(reason);
    this.#failed(error);
    return this.#abort(error);
  }

  /** Stops listening (a later {@link receive} rejects); does nothing while {@link receive} runs (see {@link abort}). */
  close(): void {
    if (!this.#receiving) this.#admission.close();
  }

  /** Counters so far. */
  get stats(): TransferStats {
    return this.#transfer?.stats(false) ?? { ...transferStats([], 0, 0, false, "none"), setupSeconds: 0 };
  }

  /** Payload bytes received so far. */
  get bytesReceived(): number {
    return this.#transfer?.bytes ?? 0;
  }

  async #prepare(destination: Destination, session: Session, transfer: Transfer): Promise<Region> {
    const { init, channels, transcripts } = session;
    let region: Region;
    try {
      region = typeof destination === "function" ? await destination(init.regionSize) : destination;
      if (region.size !== init.regionSize) {
        throw new InvalidArgumentError(`destination is ${region.size} bytes, the sender's region ${init.regionSize}`);
      }
      transfer.holdRegion(region);
    } catch (error) {
      await Promise.all(channels.map((c) => refuse(c, RefusalCode.DESTINATION_FAILED)));
      throw error;
    }
    // Each channel's INIT_ACK proves this receiver knows the secret, over that channel's transcript.
    const ack = encodeReply({ type: ReplyType.INIT_ACK, value: 0n, bytes: 0, status: 0 });
    try {
      await Promise.all(
        channels.map(async (channel, id) => channel.writev([ack, await signInitAck(this.#keys, transcripts[id], ack)])),
      );
      transfer.adoptFds(channels.map((channel) => channel.detach()));
    } catch (error) {
      for (const channel of channels) channel.close();
      throw error;
    }
    return region;
  }

  async #run(
    region: Region,
    init: Init,
    transfer: Transfer,
    keys: SessionKeys,
    encryption: (ChannelEncryption | undefined)[],
  ): Promise<ReceiverResult> {
    const count = transfer.fds.length;
    const pool = await WorkerPool.start<ToReceiver, FromReceiver>(
      new URL("./channel_worker.ts", import.meta.url),
      count,
      (error) => this.#failed(error),
    );
    // Aborted while the Workers started: the fds are closed (their numbers may belong to
    // other files by now), so they must not reach a Worker; the pool is stopped.
    transfer.adoptPool(pool);
    transfer.startClock(this.#listening);
    transfer.fds.forEach((fd, channelId) => {
      const config: ChannelConfig = {
        ...this.#config.channel,
        channelId,
        pageSize: init.pageSize,
        pagesPerPacket: init.pagesPerPacket,
        encryption: encryption[channelId],
      };
      pool.post(channelId, {
        kind: "start",
        role: "receive",
        fd,
        region: region.descriptor,
        state: transfer.state,
        config,
      });
    });

    // Each step, every channel reports either a sync (barrier) or the end of stream.
    const { control } = transfer.state;
    for (;;) {
      const events = await pool.all("sync", "ended");
      if (events.every((e) => e.kind === "ended")) break;
      if (events.some((e) => e.kind === "ended")) {
        throw new ProtocolError("packet.type", "END on some channels while others reached a SYNC");
      }
      transfer.rounds++;
      Atomics.add(control, Control.BARRIER, 1);
      Atomics.notify(control, Control.BARRIER);
    }
    transfer.stopClock();
    region.sync();
    const checksumAlgorithm = checksumAlgorithmOf(init.checksum);
    const { checksum, seconds: checksumSeconds } = await transfer.checksum(
      region.size,
      keys.checksum,
      checksumAlgorithm,
    );

    const stats = this.stats;
    for (let id = 0; id < count; id++) {
      const mac = await signResult(keys, id, stats.bytes, checksum);
      pool.post(id, { kind: "result", checksum, bytes: stats.bytes, mac, awaitVerdict: id === 0 });
    }
    const done = await pool.all("done");
    const verdict = done[0].verdict!;
    if (!await verifyVerdict(keys, verdict.matched, stats.bytes, checksum, verdict.mac)) {
      throw new AuthenticationError("the sender's verdict does not verify: altered on the way, or not from the sender");
    }
    await transfer.close();
    // An abort that won the race with the end: it is what the caller asked for last.
    if (transfer.failure) throw transfer.failure;
    return {
      ...stats,
      checksumSeconds,
      verified: verdict.matched,
      checksum: toHex(checksum),
      checksumAlgorithm,
      rejectedConnections: this.#admission.rejected,
      acceptRetries: this.#admission.acceptRetries,
    };
  }

  /** Ends everything once: admission (listener, connections in their handshake) and the transfer. */
  #abort(error: Error): Promise<void> {
    return (this.#aborting ??= (async () => {
      this.#failure ??= error;
      this.#admission.close();
      await this.#transfer?.abort(this.#failure);
    })());
  }
}

/** Validates every receiver option and resolves the defaults. */
function receiverConfig(options: ReceiverOptions): ReceiverConfig {
  if (typeof options !== "object" || options === null) {
    throw new InvalidArgumentError("receiver options are required");
  }
  checkPort(options.port ?? 0);
  return {
    limits: {
      maxSize: integerOption("maxSize", options.maxSize, DEFAULT_MAX_REGION_BYTES, 0, MAX_REGION_BYTES),
      handshakeTimeoutMs: timeoutMs(
        "handshakeTimeoutMs",
        options.handshakeTimeoutMs,
        DEFAULT_HANDSHAKE_TIMEOUT_MS,
        false,
      ),
      maxPendingHandshakes: integerOption(
        "maxPendingHandshakes",
        options.maxPendingHandshakes,
        DEFAULT_MAX_PENDING_HANDSHAKES,
        1,
        MAX_PENDING_HANDSHAKES,
      ),
      acceptTimeoutMs: timeoutMs("acceptTimeoutMs", options.acceptTimeoutMs, -1),
      requireEncryption: booleanOption("encrypt", options.encrypt),
    },
    // A receiver sends no zero-copy data: its channels take only these limits.
    channel: resolveChannelOptions({
      ioTimeoutMs: options.ioTimeoutMs,
      userTimeoutMs: options.userTimeoutMs,
      keepaliveIdleS: options.keepaliveIdleS,
    }),
  };
}

/** Tells a joined channel why the transfer will not happen, and closes it. */
async function refuse(channel: SocketChannel, code: number): Promise<void> {
  try {
    await channel.writev([encodeReply({ type: ReplyType.ERROR, value: 0n, bytes: 0, status: code })]);
  } catch {
    // The peer may already be gone; it is refused either way.
  }
  channel.close();
}
