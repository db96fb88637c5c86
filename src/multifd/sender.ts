/**
 * The sending side of a multifd transfer: N channels, each a Worker with its own socket
 * (QEMU's send threads), all reading one {@link Region} by pointer.
 *
 * ```ts
 * const sender = await MultifdSender.connect(region, { hostname: "10.0.0.2", port: 4444, secret, channels: 4 });
 * await sender.sendRound();          // every page, then a sync
 * await sender.sendRound(dirtyPages); // pages written meanwhile, then a sync
 * const result = await sender.finish(); // end of stream, checksums compared
 * ```
 * @module
 */
import {
  abortedBySignal,
  AuthenticationError,
  ChannelClosedError,
  InvalidArgumentError,
  SocketError,
  TransferAbortedError,
} from "../errors.ts";
import type { Region } from "../region.ts";
import { type ChannelOptions, resolveChannelOptions, SAME_HOST_SEND_BUFFER_BYTES } from "../channel_options.ts";
import { connect, DEFAULT_CONNECT_TIMEOUT_MS } from "../connect.ts";
import { type Cipher, cipherName, cipherOption } from "./aead.ts";
import { CHECKSUM_ALGORITHM_IDS, type ChecksumAlgorithm, checksumOption, fastAegisChecksum } from "./checksum.ts";
import {
  channelEncryption,
  importSecret,
  newNonce,
  type Secret,
  type SecretKeys,
  type SessionKeys,
  sessionKeys,
  signInit,
  signVerdict,
  type Transcript,
  verifyInitAck,
  verifyResult,
} from "./auth.ts";
import type { FromSender, SenderConfig, ToSender } from "./messages.ts";
import { Control } from "./shared_state.ts";
import type { TransferStats } from "./stats.ts";
import { toHex } from "../../util/format.ts";
import { sameBytes } from "../../util/bytes.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_PAGES_PER_PACKET,
  encodeInitFields,
  HELLO_BYTES,
  HelloFlag,
  type Init,
  INIT_ACK_BYTES,
  MAX_CHANNELS,
  MAX_PAGES_PER_PACKET,
  MAX_REGION_BYTES,
  PAGE_SIZE,
  parseHello,
  parseReply,
  ProtocolError,
  REPLY_BYTES,
  ReplyType,
  SESSION_ID_BYTES,
  TransferRefusedError,
} from "./wire.ts";
import { Transfer } from "./transfer.ts";
import { WorkerPool } from "./worker_pool.ts";
import { lockedMemoryBudget, MIN_ZEROCOPY_BUDGET_BYTES } from "../locked_memory.ts";
import { integerOption, timeoutMs } from "../options.ts";

/**
 * Where {@link MultifdSender.connect} connects to and how the transfer runs: channels,
 * zero-copy, packet size, per-channel limits. Every option is checked before anything
 * connects. The channel options (`zerocopy`, `ioTimeoutMs`, `flushTimeoutMs`,
 * `userTimeoutMs`, `keepaliveIdleS`, `sendBufferBytes`) apply to every channel, as for
 * `connect`, with the same defaults.
 *
 * @example Four zero-copy channels, all-zero pages sent as offsets only
 * ```ts
 * import process from "node:process";
 * import { MultifdSender, Region, type SenderOptions } from "zerocopy-multifd";
 *
 * const options: SenderOptions = {
 *   hostname: "10.0.0.2",
 *   port: 4444,
 *   secret: process.env.ZEROCOPY_MULTIFD_SECRET!, // the receiver's secret, ≥ 16 bytes
 *   channels: 4,
 *   zerocopy: true,
 *   signal: AbortSignal.timeout(600_000), // give up after 10 minutes
 * };
 * const region = Region.openFile("guest.img");
 * const sender = await MultifdSender.connect(region, options);
 * ```
 */
export interface SenderOptions extends ChannelOptions {
  /** The receiver's address: IP literal or name. */
  hostname: string;
  /** The receiver's port (its `MultifdReceiver.port`). */
  port: number;
  /** Shared secret the receiver also has (≥ 16 bytes): every channel proves it. */
  secret: Secret;
  /** Parallel channels, 1..64. Default 2 (as QEMU). */
  channels?: number;
  /**
   * Send all-zero pages as offsets only (the receiver makes them zero), as QEMU does. Default
   * true: memory that users move (guest RAM, snapshots) often has many, and finding that a
   * page holds data costs a look at a few of its words. false: every page goes as data.
   */
  zeroPages?: boolean;
  /**
   * With `zerocopy`: a channel whose first 32 MiB of zero-copy sends the kernel all reports as
   * copied (loopback, veth, a device without scatter-gather) goes on with ordinary sends,
   * as the kernel's MSG_ZEROCOPY documentation advises: there the flag only adds page
   * pinning and notifications to a copy that happens anyway (`zerocopyFallbacks` counts
   * such channels). A channel with any send really zero-copied keeps the flag. false: every
   * page goes with MSG_ZEROCOPY however the kernel treats it (QEMU's behaviour). Default true.
   */
  zerocopyFallback?: boolean;
  /**
   * Most pages per data packet, 1..1024. Default 1024 (4 MiB). A round too small to give
   * every channel a packet this size is split evenly among the channels.
   */
  pagesPerPacket?: number;
  /**
   * Encrypt every channel: all packets, the offsets and page data as well as the control
   * packets and the receiver's replies, are sealed with an AEAD under per-channel,
   * per-direction keys (docs/PROTOCOL.md "Encrypted channels"). true: the default cipher,
   * "aegis-128l"; or name one ({@link Cipher}: "aes-256-gcm" is the conservative choice).
   * Works with `zerocopy`: packets are sealed into staging buffers sent zero-copy. Default
   * false: packets travel in the clear (authenticated at the handshake and at the end only).
   */
  encrypt?: boolean | Cipher;
  /**
   * The MAC of the region checksum compared at the end ({@link ChecksumAlgorithm}). Default:
   * "aegis-128l" (AEGIS-128L-MAC) when both ends compute it on the CPU's AES instructions
   * (the receiver says so in its HELLO), else "blake3" (keyed BLAKE3). Both are 256-bit
   * MACs under the session's key; AEGIS is about 3× faster where both have AES, BLAKE3
   * far faster where one does not (bench/checksum.ts; docs/PROTOCOL.md "Checksum").
   */
  checksum?: ChecksumAlgorithm;
  /**
   * SO_SNDBUF of every channel. Default: {@link SAME_HOST_SEND_BUFFER_BYTES} (256 KiB) when
   * the receiver is on this host (each connection's local and peer addresses are equal),
   * else the kernel's autotuning; -1: the kernel's autotuning in any case.
   */
  sendBufferBytes?: number;
  /**
   * Locked memory (RLIMIT_MEMLOCK) the zero-copy sends of all channels together may keep
   * charged, split equally between the channels (see the channel option of that name).
   * -1: no limit. Default: {@link lockedMemoryBudget} (-1 for root).
   */
  zerocopyBudgetBytes?: number;
  /** Limit for each channel's TCP handshake, in ms. Default {@link DEFAULT_CONNECT_TIMEOUT_MS}. */
  connectTimeoutMs?: number;
  /** Limit for each channel's authentication with the receiver, in ms. Default {@link DEFAULT_HANDSHAKE_TIMEOUT_MS}. */
  handshakeTimeoutMs?: number;
  /** Aborts the connection attempt or, once connected, the transfer (as {@link MultifdSender.abort}). */
  signal?: AbortSignal;
}

/**
 * Where a sender stands: "rounds" (connected: sending rounds), "checksum" (finish() sent
 * END and is hashing the region), "ending" (the checksum exchange), "ended"
 * (finish() resolved), "failed" (aborted or failed).
 */
export type SenderPhase = "rounds" | "checksum" | "ending" | "ended" | "failed";

/**
 * What {@link MultifdSender.finish} resolves with: the transfer's statistics, and whether
 * the receiver holds exactly what was sent.
 *
 * @example Refuse to switch over to an unverified copy
 * ```ts
 * import type { SenderResult } from "zerocopy-multifd";
 *
 * function report(result: SenderResult): void {
 *   if (!result.verified) throw new Error(`checksum ${result.checksum} != ${result.remoteChecksum}`);
 *   console.log(`${result.bytes} bytes in ${result.seconds} s (${result.GBps} GB/s) over ${result.channels} channels`);
 * }
 * ```
 */
export interface SenderResult extends TransferStats {
  /** The receiver's checksum equals ours and it received every byte sent. */
  verified: boolean;
  /** This side's checksum of the whole region (16 hex digits). */
  checksum: string;
  /** The MAC the checksums were computed with (chosen at the handshake). */
  checksumAlgorithm: ChecksumAlgorithm;
  /** The receiver's checksum of its region (16 hex digits). */
  remoteChecksum: string;
}

/**
 * The source of a multifd transfer: moves a {@link Region} to a {@link MultifdReceiver}
 * over several authenticated TCP channels, one Worker each, in rounds of pages, then
 * verifies the copy by checksum. Rounds of dirty pages allow live migration.
 *
 * @example Copy a region, then the pages written during the first round
 * ```ts
 * import { MultifdSender, Region } from "zerocopy-multifd";
 *
 * const region = Region.allocate(1 << 30);
 * const sender = await MultifdSender.connect(region, {
 *   hostname: "10.0.0.2",
 *   port: 4444,
 *   secret: "a shared secret of at least 16 bytes",
 *   channels: 4,
 * });
 * await sender.sendRound(); // every page, then a sync
 * await sender.sendRound([0, 1, 17]); // indices of 4 KiB pages written meanwhile
 * const result = await sender.finish();
 * console.log(result.verified, result.GBps);
 * await region.close();
 * ```
 */
export class MultifdSender {
  readonly #region: Region;
  readonly #transfer: Transfer;
  readonly #pool: WorkerPool<ToSender, FromSender>;
  readonly #channels: number;
  readonly #zerocopy: boolean;
  readonly #connectStarted: number;
  #busy = false;
  #phase: SenderPhase = "rounds";
  /** SO_SNDBUF of every channel as set (undefined: the kernel's autotuning). See SenderOptions.sendBufferBytes. */
  readonly sendBufferBytes: number | undefined;

  readonly #keys: SessionKeys;
  readonly #checksumAlgorithm: ChecksumAlgorithm;
  private constructor(
    region: Region,
    transfer: Transfer,
    pool: WorkerPool<ToSender, FromSender>,
    zerocopy: boolean,
    started: number,
    sendBufferBytes: number | undefined,
    keys: SessionKeys,
    checksumAlgorithm: ChecksumAlgorithm,
  ) {
    this.sendBufferBytes = sendBufferBytes;
    this.#keys = keys;
    this.#checksumAlgorithm = checksumAlgorithm;
    this.#region = region;
    this.#transfer = transfer;
    this.#pool = pool;
    this.#channels = transfer.fds.length;
    this.#zerocopy = zerocopy;
    this.#connectStarted = started;
  }

  /**
   * Connects and authenticates every channel, then starts the channel Workers. Aborting
   * `options.signal` cancels the connection (TransferAbortedError) or, later, the transfer.
   */
  static async connect(region: Region, options: SenderOptions): Promise<MultifdSender> {
    const started = performance.now();
    const config = senderConfig(options, region);
    const keys = await importSecret(options.secret);
    const signal = options.signal;
    if (signal?.aborted) throw abortedBySignal(signal);
    const sessionId = crypto.getRandomValues(new Uint8Array(SESSION_ID_BYTES));
    const transfer = new Transfer(config.channels, cipherName(config.cipher) ?? "none");
    transfer.holdRegion(region);
    try {
      const opened = await Promise.allSettled(
        Array.from({ length: config.channels }, (_, channelId) =>
          handshake(options, keys, {
            sessionId,
            channelId,
            channelCount: config.channels,
            pageSize: PAGE_SIZE,
            regionSize: region.size,
            pagesPerPacket: config.pagesPerPacket,
            cipher: config.cipher,
          }, config.checksum)),
      );
      const channels = opened.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      transfer.adoptFds(channels.map((channel) => channel.fd));
      if (signal?.aborted) throw abortedBySignal(signal);
      const failures = opened.flatMap((r) => (r.status === "rejected" ? [r.reason as Error] : []));
      // A refusal names the cause; the receiver closes the other channels without a word.
      if (failures.length > 0) throw failures.find((e) => e instanceof TransferRefusedError) ?? failures[0];
      const checksum = channels[0].checksum;
      if (channels.some((channel) => channel.checksum !== checksum)) {
        throw new ProtocolError("hello.flags", "the receiver's channels disagree on its checksum capability");
      }
      // A Worker failure aborts the whole transfer; the sender exists by the time one can fail.
      const created: { sender?: MultifdSender } = {};
      const pool = await WorkerPool.start<ToSender, FromSender>(
        new URL("./channel_worker.ts", import.meta.url),
        config.channels,
        (error) => void created.sender?.abortWith(error),
      );
      transfer.adoptPool(pool);
      if (signal?.aborted) throw abortedBySignal(signal);
      // The receiver on this host: a short send queue keeps the kernel's copy of what the
      // sender queues (zero-copy or not) on the sending side (bench/RESULTS.md, run C).
      const sameHost = config.sendBufferAuto && channels.every((channel) => channel.peerOnThisHost);
      const sendBufferBytes = sameHost ? SAME_HOST_SEND_BUFFER_BYTES : config.channel.sendBufferBytes;
      const session = await sessionKeys(keys, channels[0].transcript);
      const transcripts = channels.map((channel) => channel.transcript);
      const encryption = await channelEncryption(keys, config.cipher, transcripts, "send");
      const sender = new MultifdSender(
        region,
        transfer,
        pool,
        config.zerocopy,
        started,
        sendBufferBytes,
        session,
        checksum,
      );
      created.sender = sender;
      signal?.addEventListener("abort", () => void sender.abortWith(abortedBySignal(signal)), { once: true });
      transfer.fds.forEach((fd, channelId) => {
        const channelConfig: SenderConfig = {
          ...config.channel,
          channelId,
          sendBufferBytes,
          encryption: encryption[channelId],
        };
        pool.post(channelId, {
          kind: "start",
          role: "send",
          fd,
          region: region.descriptor,
          state: transfer.state,
          config: channelConfig,
        });
      });
      return sender;
    } catch (error) {
      await transfer.abort(error as Error);
      throw error;
    }
  }

  /**
   * Sends `pages` (page indices; default: every page of the region), then syncs: every
   * channel sends SYNC, flushes its zero-copy sends (a failure aborts the transfer) and
   * waits for the receiver's acknowledgement that all channels reached the barrier. A
   * page may be written by the application meanwhile: mark it dirty and send it again in
   * a later round.
   */
  async sendRound(pages?: ArrayLike<number>): Promise<void> {
    this.#enter();
    // Transfer time excludes connection and Worker start-up.
    this.#transfer.startClock(this.#connectStarted);
    try {
      const list = pages === undefined ? null : this.#pageList(pages);
      const pageCount = list ? list.length : Math.ceil(this.#region.size / PAGE_SIZE);
      Atomics.store(this.#transfer.state.control, Control.CURSOR, 0);
      const syncNumber = this.#transfer.rounds;
      for (let id = 0; id < this.#channels; id++) {
        this.#pool.post(id, { kind: "round", pages: list, pageCount, syncNumber });
      }
      await this.#pool.all("synced");
      this.#transfer.rounds++;
      this.#transfer.stopClock();
    } catch (error) {
      throw await this.#failed(error);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Ends the stream after the last round: sends END on every channel, computes the region
   * checksum (in the channel Workers, in parallel, while the receiver computes its own),
   * compares with the receiver's authenticated checksum and closes. The region is released
   * (its `close()` can complete).
   */
  async finish(): Promise<SenderResult> {
    this.#enter();
    try {
      this.#phase = "checksum";
      // END first: the receiver hashes its region while this side hashes its own (on two
      // hosts the checksum phase then takes one hash's time, not two).
      for (let id = 0; id < this.#channels; id++) this.#pool.post(id, { kind: "end" });
      await this.#pool.all("endSent");
      const keys = this.#keys;
      const { checksum, seconds: checksumSeconds } = await this.#transfer.checksum(
        this.#region.size,
        keys.checksum,
        this.#checksumAlgorithm,
      );

      this.#phase = "ending";
      for (let id = 0; id < this.#channels; id++) this.#pool.post(id, { kind: "readResult" });
      const results = await this.#pool.all("result");
      const proven = await Promise.all(results.map((r, id) => verifyResult(keys, id, r.bytes, r.checksum, r.mac)));
      if (!proven.every(Boolean)) {
        throw new AuthenticationError(
          `the receiver's result on channel ${
            proven.indexOf(false)
          } does not verify: altered on the way, or not from the receiver`,
        );
      }
      const stats = this.stats;
      const remote = results[0];
      const verified = results.every((r) => sameBytes(r.checksum, checksum)) && remote.bytes === stats.bytes;
      const mac = await signVerdict(keys, verified, remote.bytes, remote.checksum);
      for (let id = 0; id < this.#channels; id++) this.#pool.post(id, { kind: "verdict", matched: verified, mac });
      await this.#pool.all("done");
      await this.#transfer.close();
      // An abort that won the race with the end: it is what the caller asked for last.
      if (this.#transfer.failure) throw this.#transfer.failure;
      this.#phase = "ended";
      return {
        ...stats,
        checksumSeconds,
        verified,
        checksum: toHex(checksum),
        checksumAlgorithm: this.#checksumAlgorithm,
        remoteChecksum: toHex(remote.checksum),
      };
    } catch (error) {
      throw await this.#failed(error);
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Aborts the transfer: every channel's connection is shut down (the receiver sees it
   * and fails too), the Workers exit, pending calls reject with TransferAbortedError.
   * Resolves once every Worker has exited, every fd is closed and the region released.
   * After the transfer has ended, it does nothing.
   */
  abort(reason: string = "aborted by the sender"): Promise<void> {
    return this.abortWith(new TransferAbortedError(reason));
  }

  /** Where the transfer stands (e.g. for a progress display). */
  get phase(): SenderPhase {
    return this.#transfer.failure ? "failed" : this.#phase;
  }

  /** Counters so far (readable during a round, e.g. for a progress bar). */
  get stats(): TransferStats {
    return this.#transfer.stats(this.#zerocopy);
  }

  /** Payload bytes sent so far (cheap enough for a progress bar). */
  get bytesSent(): number {
    return this.#transfer.bytes;
  }

  /** @internal Aborts with a given cause (a failed channel). */
  abortWith(error: Error): Promise<void> {
    return this.#transfer.abort(error);
  }

  /** A call failed: the transfer ends (once), and the call rejects with the first cause, after teardown. */
  async #failed(error: unknown): Promise<Error> {
    await this.#transfer.abort(error as Error);
    return this.#transfer.failure ?? (error as Error);
  }

  #enter(): void {
    if (this.#transfer.failure) throw this.#transfer.failure;
    if (this.#transfer.ending) throw new ChannelClosedError("the transfer has finished");
    if (this.#busy) throw new InvalidArgumentError("sendRound/finish calls must not overlap");
    this.#busy = true;
  }

  /** Validates page indices and returns them sorted, in shared memory for the Workers. */
  #pageList(pages: ArrayLike<number>): Uint32Array<SharedArrayBuffer> {
    const pageCount = Math.ceil(this.#region.size / PAGE_SIZE);
    const list = new Uint32Array(new SharedArrayBuffer(pages.length * 4));
    for (let i = 0; i < pages.length; i++) {
      const page = pages[i];
      if (!Number.isInteger(page) || page < 0 || page >= pageCount) {
        throw new InvalidArgumentError(`page index ${page} is outside the region's ${pageCount} pages`);
      }
      list[i] = page;
    }
    list.sort();
    for (let i = 1; i < list.length; i++) {
      if (list[i] === list[i - 1]) throw new InvalidArgumentError(`page ${list[i]} is listed twice`);
    }
    return list;
  }
}

/**
 * Attempts per channel: a receiver under a connection flood may evict a connection still
 * in its handshake (it closes it without a word, as it does on a wrong secret); the
 * channel then connects again. An evicted connection never counted, so this is safe.
 */
const HANDSHAKE_ATTEMPTS = 3;

/** A channel that completed its handshake: its fd, detached, whether its peer is this host, its transcript. */
interface Handshaken {
  fd: number;
  peerOnThisHost: boolean;
  transcript: Transcript;
  /** The region checksum's MAC this channel's INIT named. */
  checksum: ChecksumAlgorithm;
}

/** The INIT fields but the checksum algorithm, which each channel names after its HELLO. */
type InitFields = Omit<Init, "checksum">;

/** One channel's connection and authenticated handshake. */
async function handshake(
  options: SenderOptions,
  keys: SecretKeys,
  init: InitFields,
  checksum: ChecksumAlgorithm | undefined,
): Promise<Handshaken> {
  for (let attempt = 1;; attempt++) {
    try {
      return await handshakeOnce(options, keys, init, checksum);
    } catch (error) {
      const dropped = error instanceof ChannelClosedError ||
        (error instanceof SocketError && (error.code === "ECONNRESET" || error.code === "EPIPE"));
      if (!dropped || attempt >= HANDSHAKE_ATTEMPTS || options.signal?.aborted) throw error;
    }
  }
}

/** An abort of `options.signal` closes the connection, which ends the handshake at once. */
async function handshakeOnce(
  options: SenderOptions,
  keys: SecretKeys,
  fields: InitFields,
  checksumOption: ChecksumAlgorithm | undefined,
): Promise<Handshaken> {
  const channel = await connect({
    hostname: options.hostname,
    port: options.port,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    ioTimeoutMs: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
  });
  const close = () => channel.close();
  options.signal?.addEventListener("abort", close, { once: true });
  try {
    if (options.signal?.aborted) throw abortedBySignal(options.signal);
    const hello = new Uint8Array(HELLO_BYTES);
    if (await channel.readFull(hello) < HELLO_BYTES) {
      throw new ChannelClosedError("the receiver closed the connection during the handshake");
    }
    const { nonce, flags } = parseHello(hello);
    const checksum = checksumOption ??
      (fastAegisChecksum() && (flags & HelloFlag.FAST_AEGIS_CHECKSUM) !== 0 ? "aegis-128l" : "blake3");
    const init = encodeInitFields({ ...fields, checksum: CHECKSUM_ALGORITHM_IDS[checksum] });
    const transcript = { receiverNonce: nonce, senderNonce: newNonce(), init };
    await channel.writev([transcript.init, transcript.senderNonce, await signInit(keys, transcript)]);
    const ack = new Uint8Array(INIT_ACK_BYTES);
    const reply = ack.subarray(0, REPLY_BYTES);
    if (await channel.readFull(reply) < REPLY_BYTES) {
      throw new ChannelClosedError("the receiver closed the connection: wrong secret, or it refused the channel");
    }
    // An ERROR reply carries no MAC: it can only refuse, which anyone on the path can do anyway.
    parseReply(reply, ReplyType.INIT_ACK);
    const mac = ack.subarray(REPLY_BYTES);
    if (await channel.readFull(mac) < mac.length || !await verifyInitAck(keys, transcript, reply, mac)) {
      throw new AuthenticationError(
        "the receiver did not prove that it knows the secret (wrong secret, an impostor, or a replay): nothing was sent",
      );
    }
    const peerOnThisHost = channel.peerOnThisHost;
    return { fd: channel.detach(), peerOnThisHost, transcript, checksum };
  } catch (error) {
    channel.close();
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", close);
  }
}

/** Validates every option (before any connection) and resolves the defaults. */
function senderConfig(options: SenderOptions, region: Region) {
  if (typeof options !== "object" || options === null) throw new InvalidArgumentError("sender options are required");
  if (region.size > MAX_REGION_BYTES) {
    throw new InvalidArgumentError(
      `the region is ${region.size} bytes; the protocol moves at most ${MAX_REGION_BYTES}`,
    );
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("signal must be an AbortSignal");
  }
  const channels = integerOption("channels", options.channels, 2, 1, MAX_CHANNELS);
  const pagesPerPacket = integerOption(
    "pagesPerPacket",
    options.pagesPerPacket,
    DEFAULT_PAGES_PER_PACKET,
    1,
    MAX_PAGES_PER_PACKET,
  );
  timeoutMs("connectTimeoutMs", options.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS);
  timeoutMs("handshakeTimeoutMs", options.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS);
  // Refused here, before any connection, not later by every channel Worker. A send buffer
  // not given is chosen once connected; -1 leaves it to the kernel in any case.
  const sendBufferAuto = options.sendBufferBytes === undefined;
  const sendBufferBytes = options.sendBufferBytes === -1 ? undefined : options.sendBufferBytes;
  const channel = resolveChannelOptions({ ...options, sendBufferBytes });
  const { zerocopy } = channel;
  // The locked-memory budget is the process's: each channel gets an equal share.
  const budget = zerocopy ? channel.zerocopyBudgetBytes ?? lockedMemoryBudget() : -1;
  const zerocopyBudgetBytes = budget < 0 ? -1 : Math.max(MIN_ZEROCOPY_BUDGET_BYTES, Math.floor(budget / channels));
  return {
    channels,
    pagesPerPacket,
    zerocopy,
    cipher: cipherOption(options.encrypt),
    checksum: checksumOption(options.checksum),
    sendBufferAuto,
    channel: {
      ...channel,
      pageSize: PAGE_SIZE,
      pagesPerPacket,
      zeroPages: options.zeroPages !== false,
      zerocopyFallback: options.zerocopyFallback !== false,
      zerocopyBudgetBytes,
    },
  };
}
