/**
 * The destination of a real QEMU's multifd migration (QEMU 7.2's stream format; see
 * docs/QEMU.md): QEMU connects its main channel and N multifd channels; each RAM block lands
 * in a file of its own (`<dir>/<block id>.ram`, pages received straight into its mapping by
 * the channel Workers, zero-page records of the main channel applied in place), and the
 * stream's non-RAM bytes (header and configuration, then the device sections, EOF and
 * vmdesc after the last RAM section) are kept verbatim in `<dir>/state.bin`, described by
 * `<dir>/manifest.json`.
 *
 * The sync barrier is QEMU's: a channel that read a SYNC packet waits until the main
 * channel's matching end-of-section (EOS) has been read and every channel has synced, so a
 * page re-sent in a later section can never be overwritten by its older copy.
 *
 * QEMU's migration stream is not authenticated: run this on a network you trust (or on one
 * host), as QEMU's own plain `-incoming tcp:` is.
 * @module
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ChannelClosedError, InvalidArgumentError, TimeoutError, TransferAbortedError } from "../errors.ts";
import { listen, type Listener } from "../listener.ts";
import { integerOption, timeoutMs } from "../options.ts";
import { Region } from "../region.ts";
import { resolveChannelOptions } from "../channel_options.ts";
import type { SocketChannel } from "../socket_channel.ts";
import type { ChannelConfig, FromReceiver, ToReceiver } from "../multifd/messages.ts";
import { Control } from "../multifd/shared_state.ts";
import type { TransferStats } from "../multifd/stats.ts";
import { Transfer } from "../multifd/transfer.ts";
import { ProtocolError } from "../multifd/wire.ts";
import type { WorkerPool } from "../multifd/worker_pool.ts";
import { StreamReader } from "./stream_reader.ts";
import { DEFAULT_MAX_REGION_BYTES } from "../multifd/receiver.ts";
import { type MainStreamHandler, type RamBlockTarget, readMainStream } from "./main_stream.ts";
import { PageScan } from "../multifd/packet.ts";
import {
  MULTIFD_INIT_BYTES,
  MULTIFD_MAGIC,
  MULTIFD_PAGES_PER_PACKET,
  parseMultifdInit,
  QEMU_PAGE_SIZE,
  QEMU_VM_FILE_MAGIC,
} from "./wire.ts";

/** How long a connection arriving after QEMU's channels may take to say what it is. */
const LATE_OPENING_MS = 2_000;
/** Most multifd channels QEMU allows (`multifd-channels` is a uint8). */
export const MAX_QEMU_CHANNELS = 255;
/** Largest tail of device state (device sections, EOF, vmdesc) kept: 256 MiB. */
export const MAX_DEVICE_STATE_BYTES = 256 * 2 ** 20;

/** Where a {@link QemuMigrationReceiver} listens and what it expects. */
export interface QemuReceiverOptions {
  /** Address to listen on. Default "127.0.0.1". */
  hostname?: string;
  /** Port; 0 (default) picks one. */
  port?: number;
  /** QEMU's `multifd-channels` (both sides must agree). Default 2, as QEMU's. */
  channels?: number;
  /** Longest wait for QEMU to connect all its channels once the first one arrived, in ms. Default 30 s. */
  connectTimeoutMs?: number;
  /** Longest a channel may go without data in the migration, in ms (-1: no limit). Default 60 s. */
  ioTimeoutMs?: number;
  /** Most guest RAM accepted (all blocks), in bytes: a larger stream is refused before any file is made. Default 64 GiB. */
  maxSize?: number;
}

/** One RAM block received: its id (QEMU's RAMBlock idstr), size, and file. */
export interface QemuRamBlock {
  /** The block's id in QEMU (e.g. "mem", "pc.ram"). */
  name: string;
  /** Its size in bytes. */
  bytes: number;
  /** The file it was written to (`<dir>/<id>.ram`). */
  file: string;
}

/** What {@link QemuMigrationReceiver.receive} resolves with; the same facts are in `manifest.json`. */
export interface QemuReceiveResult extends TransferStats {
  /**
   * The stream format seen: "7.2" (a multifd sync at the end of every RAM section) or "8.1+"
   * (`RAM_SAVE_FLAG_MULTIFD_FLUSH` records: one sync per pass over RAM; QEMU 8.1 to 10.0).
   */
  streamFormat: "7.2" | "8.1+";
  /** The machine type QEMU's configuration section names (e.g. "none"). */
  machine: string;
  /** The RAM blocks, in the order QEMU listed them. */
  blocks: QemuRamBlock[];
  /** Zero-page records of the main channel applied. */
  zeroPageRecords: number;
  /** Pages that came on the main channel (RAM_SAVE_FLAG_PAGE). */
  mainChannelPages: number;
  /** RAM sections read (START, PARTs, END). */
  sections: number;
  /** QEMU_VM_COMMANDs met between RAM sections, by id (QEMU ≥ 9.2 sends SWITCHOVER_START, 11). */
  commands: number[];
  /** Bytes of `state.bin`: the stream header and configuration, then everything after the last RAM section. */
  stateBytes: number;
}

/**
 * A QEMU-compatible multifd migration destination: what `-incoming` is to QEMU, with RAM
 * blocks going to files.
 *
 * @example Receive a migration from `migrate uri=tcp:127.0.0.1:4444` (multifd, 4 channels)
 * ```ts
 * import { QemuMigrationReceiver } from "zerocopy-multifd";
 *
 * const receiver = await QemuMigrationReceiver.listen({ port: 4444, channels: 4 });
 * const result = await receiver.receive("guest-state");
 * console.log(result.blocks, result.GBps);
 * ```
 */
export class QemuMigrationReceiver {
  readonly #listener: Listener;
  readonly #channels: number;
  readonly #connectTimeoutMs: number;
  readonly #ioTimeoutMs: number;
  readonly #maxSize: number;
  /** The one receive's transfer and its channel Workers, started by {@link listen}. */
  readonly #transfer: Transfer;
  readonly #pool: WorkerPool<ToReceiver, FromReceiver>;
  #receiving = false;
  #accepted: SocketChannel[] = [];
  /**
   * Why the receive failed when something besides the main stream ended it (abort(), a channel
   * beyond ours): the main stream then only fails on its channel closing, which says nothing.
   */
  #cause: Error | undefined;
  /** Starts the limit on QEMU connecting all its channels (at the first connection). */
  #startDeadline: () => void = () => {};

  private constructor(
    listener: Listener,
    transfer: Transfer,
    pool: WorkerPool<ToReceiver, FromReceiver>,
    channels: number,
    connectTimeoutMs: number,
    ioTimeoutMs: number,
    maxSize: number,
  ) {
    this.#transfer = transfer;
    this.#pool = pool;
    this.#maxSize = maxSize;
    this.#listener = listener;
    this.#channels = channels;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#ioTimeoutMs = ioTimeoutMs;
  }

  /**
   * Validates the options, listens, and starts the channel Workers and the reactor's (through
   * which the connections are accepted and the main channel is read): it resolves once they
   * run, so a migration started after it finds the destination as ready as QEMU's own
   * `-incoming` (a Worker's start takes tens of ms of CPU, which a migration already under way
   * would wait for). Call {@link receive} next, or {@link close}: until one of them ends, the
   * Workers keep the process alive.
   */
  static async listen(options: QemuReceiverOptions = {}): Promise<QemuMigrationReceiver> {
    const channels = integerOption("channels", options.channels, 2, 1, MAX_QEMU_CHANNELS);
    const connect = timeoutMs("connectTimeoutMs", options.connectTimeoutMs, 30_000, false);
    const io = timeoutMs("ioTimeoutMs", options.ioTimeoutMs, 60_000);
    const maxSize = integerOption("maxSize", options.maxSize, DEFAULT_MAX_REGION_BYTES, 0, Number.MAX_SAFE_INTEGER);
    const listener = await listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
    const transfer = new Transfer(channels, "none");
    let pool: WorkerPool<ToReceiver, FromReceiver>;
    try {
      // The accepts and the main stream's reads wait through the reactor: its Worker too.
      [pool] = await Promise.all([transfer.startPool<ToReceiver, FromReceiver>(channels), listener.prepare()]);
    } catch (error) {
      listener.close();
      await transfer.close();
      throw error;
    }
    return new QemuMigrationReceiver(listener, transfer, pool, channels, connect, io, maxSize);
  }

  /** The port to give QEMU's `migrate` (`tcp:HOST:PORT`). */
  get port(): number {
    return this.#listener.port;
  }

  /**
   * Receives one migration into directory `dir` (created if missing; its `*.ram`,
   * `state.bin` and `manifest.json` replaced). Resolves once QEMU has closed every channel,
   * every page is in place and the files are synced. A failed receive writes no manifest;
   * the block files it made stay, partly written. The listener stays open until then: a
   * multifd channel beyond `channels` (QEMU's multifd-channels higher) fails the receive with
   * ProtocolError `qemu.init.id`; fewer channels than `channels` end it with TimeoutError
   * after `connectTimeoutMs`.
   */
  async receive(dir: string): Promise<QemuReceiveResult> {
    if (this.#receiving) throw new InvalidArgumentError("a QemuMigrationReceiver receives one migration");
    // After close() (or abort()) no receive can start: its Workers are gone.
    if (this.#listener.closed) throw this.#cause ?? new ChannelClosedError("the receiver is closed");
    this.#receiving = true;
    let main: SocketChannel | undefined;
    const regions: Region[] = [];
    const transfer = this.#transfer;
    try {
      mkdirSync(dir, { recursive: true });
      const { mainChannel, fds, firstConnectionAt } = await this.#accept();
      main = mainChannel;
      transfer.adoptFds(fds);
      void this.#refuseLateChannels();
      return await this.#run(new StreamReader(main), transfer, dir, regions, firstConnectionAt);
    } catch (error) {
      const cause = this.#cause ?? error as Error;
      await transfer.abort(cause);
      throw cause;
    } finally {
      main?.close();
      for (const channel of this.#accepted) channel.close();
      this.#listener.close();
      for (const region of regions) await region.close();
    }
  }

  /**
   * Aborts a receive: every channel is shut down, the Workers exit, `receive` rejects with
   * TransferAbortedError(`reason`).
   */
  async abort(reason = "aborted by the receiver"): Promise<void> {
    const error = (this.#cause ??= new TransferAbortedError(reason));
    for (const channel of this.#accepted) channel.close();
    this.#listener.close();
    await this.#transfer.abort(error);
  }

  /**
   * Stops listening and ends the channel Workers, when no {@link receive} was started (one
   * that was closes everything as it ends; {@link abort} ends it early).
   */
  async close(): Promise<void> {
    if (this.#receiving) return;
    this.#listener.close(); // a receive after it fails at once
    await this.#transfer.close();
  }

  /**
   * Accepts QEMU's 1 + N connections and tells them apart by their first 4 bytes ("QEVM":
   * main; MULTIFD_MAGIC: a multifd channel, whose 64-byte opening names its id), in any
   * order. A connection that closes before 4 bytes is skipped; other first bytes fail the receive.
   */
  async #accept(): Promise<{ mainChannel: SocketChannel; fds: number[]; firstConnectionAt: number }> {
    let mainChannel: SocketChannel | undefined;
    let firstConnectionAt: number | undefined;
    const multifd: SocketChannel[] = [];
    let deadline: ReturnType<typeof setTimeout> | undefined;
    // What came by the deadline: fewer multifd channels than ours is QEMU's multifd-channels set
    // lower, none at all (with a main channel) its multifd capability off.
    const missing = () =>
      `${multifd.filter(Boolean).length} of ${this.#channels} multifd channels` +
      `${mainChannel ? "" : " and no main channel"} connected: ` +
      `is QEMU's multifd capability on, with multifd-channels ${this.#channels}?`;
    const timedOut = new Promise<never>((_, reject) => {
      this.#startDeadline = () =>
        deadline ??= setTimeout(
          () => reject(new TimeoutError("QEMU channels", this.#connectTimeoutMs, missing())),
          this.#connectTimeoutMs,
        );
    });
    timedOut.catch(() => {});
    try {
      while (!mainChannel || multifd.filter(Boolean).length < this.#channels) {
        const channel = await Promise.race([this.#listener.accept(), timedOut]);
        this.#accepted.push(channel);
        firstConnectionAt ??= performance.now();
        this.#startDeadline();
        const opening = new Uint8Array(MULTIFD_INIT_BYTES);
        if (await Promise.race([channel.readFull(opening.subarray(0, 4)), timedOut]) < 4) {
          channel.close();
          continue;
        }
        const magic = new DataView(opening.buffer).getUint32(0);
        if (magic === QEMU_VM_FILE_MAGIC) {
          if (mainChannel) throw new ProtocolError("qemu.channel", "a second main channel");
          mainChannel = channel;
          continue;
        }
        if (magic !== MULTIFD_MAGIC) {
          throw new ProtocolError("qemu.channel", `unknown channel magic 0x${magic.toString(16)}`);
        }
        if (await Promise.race([channel.readFull(opening.subarray(4)), timedOut]) < MULTIFD_INIT_BYTES - 4) {
          throw new ChannelClosedError("a multifd channel closed during its opening");
        }
        const { channelId } = parseMultifdInit(opening, this.#channels);
        if (multifd[channelId]) throw new ProtocolError("qemu.init.id", `channel ${channelId} opened twice`);
        multifd[channelId] = channel;
      }
    } finally {
      clearTimeout(deadline);
    }
    const fds = multifd.map((channel) => channel.detach());
    return { mainChannel: mainChannel!, fds, firstConnectionAt: firstConnectionAt! };
  }

  /**
   * After the accept the listener stays open for the receive: QEMU connects all its channels
   * at once, so a multifd channel arriving now is one beyond ours (its multifd-channels is
   * higher than `channels`). Refused, it made QEMU give up and close the main channel, and the
   * receive failed on the main stream's early end, which says nothing of the cause; now its
   * opening fails the receive (ProtocolError qemu.init.id). Anything else is closed. One
   * connection at a time, each given LATE_OPENING_MS to open.
   */
  async #refuseLateChannels(): Promise<void> {
    for (;;) {
      let channel: SocketChannel;
      try {
        channel = await this.#listener.accept();
      } catch {
        return; // the listener closed: the receive ended
      }
      const opening = new Uint8Array(MULTIFD_INIT_BYTES);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const silent = new Promise<number>((resolve) => timer = setTimeout(() => resolve(0), LATE_OPENING_MS));
      const read = await Promise.race([channel.readFull(opening).catch(() => 0), silent]);
      clearTimeout(timer);
      channel.close();
      if (read < MULTIFD_INIT_BYTES || new DataView(opening.buffer).getUint32(0) !== MULTIFD_MAGIC) continue;
      let cause: Error;
      try {
        // Every id below ours is taken: a valid one is a second opening of it.
        const { channelId } = parseMultifdInit(opening, this.#channels);
        cause = new ProtocolError("qemu.init.id", `channel ${channelId} opened twice`);
      } catch (error) {
        cause = error as Error;
      }
      this.#cause ??= cause;
      for (const accepted of this.#accepted) accepted.close();
      // The receive awaits this same teardown (abort returns it) and reports what it throws.
      this.#transfer.abort(this.#cause).catch(() => {});
      return;
    }
  }

  /** Reads the main stream (`started`: QEMU's first connection, the clock's start) while the Workers receive the pages. */
  async #run(
    stream: StreamReader,
    transfer: Transfer,
    dir: string,
    regions: Region[],
    started: number,
  ): Promise<QemuReceiveResult> {
    const order: QemuRamBlock[] = [];
    const pool = this.#pool;
    const handler: MainStreamHandler = {
      blocks: (list) => {
        for (const { name, bytes } of list) {
          const file = join(dir, `${name.replaceAll("/", "_")}.ram`);
          rmSync(file, { force: true });
          // Sparse: no reserving of every page before the first byte can land (the free
          // space is checked; every write populates first, so a full tmpfs fails typed).
          const region = Region.createFile(file, bytes, { sparse: true });
          regions.push(region);
          transfer.holdRegion(region);
          order.push({ name, bytes, file });
        }
        this.#startChannels(pool, transfer, order, regions, started);
        return regions.map(zeroFillable);
      },
      // QEMU's multifd_recv_sync_main: every channel has read its SYNC; then all go on.
      barrier: async () => {
        await pool.all("sync");
        transfer.rounds++;
        Atomics.add(transfer.state.control, Control.BARRIER, 1);
        Atomics.notify(transfer.state.control, Control.BARRIER);
      },
    };
    const facts = await readMainStream(stream, handler, {
      maxRamBytes: this.#maxSize,
      maxStateBytes: MAX_DEVICE_STATE_BYTES,
    });
    // The stream ended after its last sync: every channel's data has been read.
    transfer.endReads();
    // A channel at a sync the stream never matched (a source that left out its last barrier)
    // would wait there for ioTimeoutMs: it fails the receive now.
    const ends = await pool.all("ended", "sync");
    const waiting = ends.findIndex((message) => message.kind === "sync");
    if (waiting >= 0) {
      throw new ProtocolError(
        "qemu.sync",
        `channel ${waiting} sent a SYNC that the main stream ended without matching`,
      );
    }
    transfer.stopClock();
    for (const region of regions) region.sync();
    const stats = transfer.stats(false);
    if (transfer.failure) throw transfer.failure;
    // The Workers exit while the files are written: all have ended, and once the close has
    // begun an abort changes nothing, so no failure can follow the manifest.
    const closing = transfer.close();
    const state = new Uint8Array(facts.head.length + facts.tail.length);
    state.set(facts.head);
    state.set(facts.tail, facts.head.length);
    writeFileSync(join(dir, "state.bin"), state);
    const result: QemuReceiveResult = {
      ...stats,
      streamFormat: facts.syncPerPass ? "8.1+" : "7.2",
      machine: facts.machine,
      blocks: order,
      zeroPageRecords: facts.zeroPageRecords,
      mainChannelPages: facts.mainChannelPages,
      sections: facts.sections,
      commands: facts.commands,
      stateBytes: state.length,
    };
    const manifest = { ...result, stateHeaderBytes: facts.head.length };
    writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    await closing;
    return result;
  }

  /** Starts every channel Worker receiving into the blocks (QEMU's packets name theirs). */
  #startChannels(
    pool: WorkerPool<ToReceiver, FromReceiver>,
    transfer: Transfer,
    order: QemuRamBlock[],
    regions: Region[],
    started: number,
  ): void {
    transfer.startClock(started);
    const ramBlocks = order.map((block, i) => ({ name: block.name, region: regions[i].descriptor }));
    const options = resolveChannelOptions({ ioTimeoutMs: this.#ioTimeoutMs });
    transfer.fds.forEach((fd, channelId) => {
      const config: ChannelConfig = {
        ...options,
        channelId,
        pageSize: QEMU_PAGE_SIZE,
        pagesPerPacket: MULTIFD_PAGES_PER_PACKET,
        qemu: { ramBlocks },
      };
      pool.post(channelId, {
        kind: "start",
        role: "receive",
        fd,
        region: ramBlocks[0].region,
        state: transfer.state,
        config,
      });
      // Nothing follows a receive of QEMU's data: the Worker takes this request as soon as its
      // receive has ended and says it has exited, so the teardown does not wait for a round trip.
      pool.post(channelId, { kind: "exit" });
    });
  }
}

/** Zero-page records applied in one native call (a guest's idle RAM comes as a long run of them). */
const ZERO_PAGE_BATCH = 1024;

/** A region as the main-stream parser writes it: zero pages queued, then through the native zero-fill (packet.ts). */
function zeroFillable(region: Region): RamBlockTarget {
  const scan = new PageScan(region.descriptor, QEMU_PAGE_SIZE);
  // No more room than the block has pages: a stream's tiny blocks do not each cost a full batch.
  const queued = new Float64Array(Math.min(ZERO_PAGE_BATCH, Math.ceil(region.size / QEMU_PAGE_SIZE)));
  let count = 0;
  const flushZeroPages = () => {
    if (count === 0) return;
    scan.zeroFill(queued, 0, count);
    count = 0;
  };
  return {
    size: region.size,
    view: (at, length) => region.writable(at, length),
    zeroPage: (at) => {
      queued[count++] = at;
      if (count === queued.length) flushZeroPages();
    },
    flushZeroPages,
  };
}
