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
import { ChannelClosedError, TimeoutError } from "../errors.ts";
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
import { WorkerPool } from "../multifd/worker_pool.ts";
import { StreamReader } from "./stream_reader.ts";
import {
  MULTIFD_INIT_BYTES,
  MULTIFD_MAGIC,
  MULTIFD_PAGES_PER_PACKET,
  parseMultifdInit,
  QEMU_PAGE_SIZE,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
} from "./wire.ts";

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

// Section types and RAM record flags of QEMU's main stream (savevm.h, ram.c).
const Section = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
};
/** QEMU_VM_COMMAND commands understood: SWITCHOVER_START (QEMU ≥ 9.2: "the source is about to stop the VM"). */
const Command = { SWITCHOVER_START: 11 };
const SECTION_FOOTER = 0x7e;
const Ram = {
  ZERO: 0x02,
  MEM_SIZE: 0x04,
  PAGE: 0x08,
  EOS: 0x10,
  CONTINUE: 0x20,
  XBZRLE: 0x40,
  HOOK: 0x80,
  COMPRESS_PAGE: 0x100,
  MULTIFD_FLUSH: 0x200,
};
const RAM_SECTION_VERSION = 4;
const PAGE_MASK = BigInt(QEMU_PAGE_SIZE - 1);

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
  #transfer: Transfer | undefined;
  #accepted: SocketChannel[] = [];
  /** Starts the limit on QEMU connecting all its channels (at the first connection). */
  #startDeadline: () => void = () => {};

  private constructor(listener: Listener, channels: number, connectTimeoutMs: number, ioTimeoutMs: number) {
    this.#listener = listener;
    this.#channels = channels;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#ioTimeoutMs = ioTimeoutMs;
  }

  /** Validates the options, then listens. */
  static async listen(options: QemuReceiverOptions = {}): Promise<QemuMigrationReceiver> {
    const channels = integerOption("channels", options.channels, 2, 1, MAX_QEMU_CHANNELS);
    const connect = timeoutMs("connectTimeoutMs", options.connectTimeoutMs, 30_000, false);
    const io = timeoutMs("ioTimeoutMs", options.ioTimeoutMs, 60_000);
    const listener = await listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
    return new QemuMigrationReceiver(listener, channels, connect, io);
  }

  /** The port to give QEMU's `migrate` (`tcp:HOST:PORT`). */
  get port(): number {
    return this.#listener.port;
  }

  /**
   * Receives one migration into directory `dir` (created if missing; its `*.ram`,
   * `state.bin` and `manifest.json` replaced). Resolves once QEMU has closed every channel,
   * every page is in place and the files are synced.
   */
  async receive(dir: string): Promise<QemuReceiveResult> {
    const started = performance.now();
    mkdirSync(dir, { recursive: true });
    let main: SocketChannel | undefined;
    const regions: Region[] = [];
    try {
      const { mainChannel, fds } = await this.#accept();
      main = mainChannel;
      const transfer = (this.#transfer = new Transfer(this.#channels, "none"));
      transfer.adoptFds(fds);
      const result = await this.#run(new StreamReader(main), transfer, dir, regions, started);
      return result;
    } catch (error) {
      await this.#transfer?.abort(error as Error);
      throw error;
    } finally {
      main?.close();
      for (const channel of this.#accepted) channel.close();
      this.#listener.close();
      for (const region of regions) await region.close();
    }
  }

  /** Aborts a receive: every channel is shut down, the Workers exit, `receive` rejects. */
  async abort(reason = "aborted by the receiver"): Promise<void> {
    const error = new ChannelClosedError(reason);
    for (const channel of this.#accepted) channel.close();
    this.#listener.close();
    await this.#transfer?.abort(error);
  }

  /**
   * Accepts QEMU's 1 + N connections and tells them apart by their first 4 bytes ("QEVM":
   * main; MULTIFD_MAGIC: a multifd channel, whose 64-byte opening names its id), in any
   * order. Anything else is closed.
   */
  async #accept(): Promise<{ mainChannel: SocketChannel; fds: number[] }> {
    let mainChannel: SocketChannel | undefined;
    const multifd: SocketChannel[] = [];
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      this.#startDeadline = () =>
        deadline ??= setTimeout(
          () => reject(new TimeoutError("QEMU channels", this.#connectTimeoutMs, "not every channel connected")),
          this.#connectTimeoutMs,
        );
    });
    timedOut.catch(() => {});
    try {
      while (!mainChannel || multifd.filter(Boolean).length < this.#channels) {
        const channel = await Promise.race([this.#listener.accept(), timedOut]);
        this.#accepted.push(channel);
        this.#startDeadline();
        const opening = new Uint8Array(MULTIFD_INIT_BYTES);
        if (await Promise.race([channel.readFull(opening.subarray(0, 4)), timedOut]) < 4) {
          channel.close();
          continue;
        }
        const magic = new DataView(opening.buffer).getUint32(0);
        if (magic === QEMU_VM_FILE_MAGIC && !mainChannel) {
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
    this.#listener.close();
    const fds = multifd.map((channel) => channel.detach());
    return { mainChannel: mainChannel!, fds };
  }

  async #run(
    stream: StreamReader,
    transfer: Transfer,
    dir: string,
    regions: Region[],
    started: number,
  ): Promise<QemuReceiveResult> {
    // Header and configuration: kept verbatim (the start of state.bin).
    const head: number[] = [];
    // The magic ("QEVM") was read when the channel was told apart from the multifd ones.
    const version = await stream.u32("qemu.header");
    if (version !== QEMU_VM_FILE_VERSION) throw new ProtocolError("qemu.header", `file version ${version}`);
    pushU32(head, QEMU_VM_FILE_MAGIC), pushU32(head, version);
    let machine = "";
    if (await stream.peek() === Section.CONFIGURATION) {
      head.push(await stream.u8("qemu.configuration"));
      const length = await stream.u32("qemu.configuration");
      const name = await stream.bytes(length, "qemu.configuration");
      pushU32(head, length), head.push(...name);
      machine = new TextDecoder().decode(name);
      if (await stream.peek() === Section.SUBSECTION) {
        throw new ProtocolError(
          "qemu.configuration",
          "configuration subsections (-uuid with validate-uuid, x-ignore-shared) are not supported",
        );
      }
    }

    const blocks = new Map<string, Region>();
    const order: QemuRamBlock[] = [];
    let ramSection = -1;
    let sections = 0;
    let zeroPageRecords = 0;
    let mainChannelPages = 0;
    let pool: WorkerPool<ToReceiver, FromReceiver> | undefined;
    let lastBlock: Region | undefined;
    /** Whether the stream syncs once per pass (MULTIFD_FLUSH records, QEMU ≥ 8.1) rather than per section (7.2). */
    let syncPerPass = false;
    /** QEMU_VM_COMMANDs read between RAM sections (ids). */
    const commands: number[] = [];

    const startWorkers = async () => {
      pool = await WorkerPool.start<ToReceiver, FromReceiver>(
        new URL("../multifd/channel_worker.ts", import.meta.url),
        this.#channels,
        (error) => void transfer.abort(error),
      );
      transfer.adoptPool(pool);
      transfer.startClock(started);
      const ramBlocks = order.map((b) => ({ name: b.name, region: blocks.get(b.name)!.descriptor }));
      const options = resolveChannelOptions({ ioTimeoutMs: this.#ioTimeoutMs });
      transfer.fds.forEach((fd, channelId) => {
        const config: ChannelConfig = {
          ...options,
          channelId,
          pageSize: QEMU_PAGE_SIZE,
          pagesPerPacket: MULTIFD_PAGES_PER_PACKET,
          qemu: { ramBlocks },
        };
        pool!.post(channelId, {
          kind: "start",
          role: "receive",
          fd,
          region: ramBlocks[0].region,
          state: transfer.state,
          config,
        });
      });
    };

    /** QEMU's multifd_recv_sync_main: every channel has read its SYNC; then all go on. */
    const barrier = async () => {
      await pool!.all("sync");
      transfer.rounds++;
      Atomics.add(transfer.state.control, Control.BARRIER, 1);
      Atomics.notify(transfer.state.control, Control.BARRIER);
    };

    const blockOf = async (flags: number): Promise<Region> => {
      if (flags & Ram.CONTINUE) {
        if (!lastBlock) throw new ProtocolError("qemu.ram.block", "CONTINUE without a block before it");
        return lastBlock;
      }
      const name = await stream.idstr("qemu.ram.block");
      const region = blocks.get(name);
      if (!region) throw new ProtocolError("qemu.ram.block", `unknown RAM block "${name}"`);
      return (lastBlock = region);
    };

    /** One RAM section's records, up to and including its EOS. */
    const ramRecords = async (start: boolean) => {
      for (;;) {
        const word = await stream.u64("qemu.ram.record");
        const flags = Number(word & PAGE_MASK);
        const offset = Number(word & ~PAGE_MASK);
        if (flags & Ram.MEM_SIZE) {
          if (!start || blocks.size > 0) {
            throw new ProtocolError("qemu.ram.record", "MEM_SIZE outside the first section");
          }
          let total = offset;
          while (total > 0) {
            const name = await stream.idstr("qemu.ram.block");
            const bytes = Number(await stream.u64("qemu.ram.block"));
            if (bytes <= 0 || bytes > total || bytes % QEMU_PAGE_SIZE !== 0 || blocks.has(name)) {
              throw new ProtocolError("qemu.ram.block", `block "${name}" of ${bytes} bytes (of ${total} left)`);
            }
            if (!/^[\w.:/@-]+$/.test(name)) throw new ProtocolError("qemu.ram.block", `block id "${name}"`);
            const file = join(dir, `${name.replaceAll("/", "_")}.ram`);
            rmSync(file, { force: true });
            const region = Region.createFile(file, bytes);
            regions.push(region);
            transfer.holdRegion(region);
            blocks.set(name, region);
            order.push({ name, bytes, file });
            total -= bytes;
          }
          await startWorkers();
          continue;
        }
        if (flags === Ram.MULTIFD_FLUSH) {
          // QEMU ≥ 8.1 (without the 8.0 machine compat): one sync per pass over RAM, marked
          // here, instead of one per section; its EOS is then no barrier.
          if (!pool) throw new ProtocolError("qemu.ram.record", "MULTIFD_FLUSH before MEM_SIZE");
          syncPerPass = true;
          await barrier();
          continue;
        }
        if (flags === Ram.EOS) {
          if (!syncPerPass) await barrier();
          return;
        }
        const kind = flags & ~Ram.CONTINUE;
        if (kind === Ram.ZERO || kind === Ram.PAGE) {
          const region = await blockOf(flags);
          if (offset + QEMU_PAGE_SIZE > region.size) {
            throw new ProtocolError("qemu.ram.offset", `${offset} is outside a block of ${region.size} bytes`);
          }
          const page = region.view(offset, QEMU_PAGE_SIZE);
          if (kind === Ram.ZERO) {
            const fill = await stream.u8("qemu.ram.zero");
            // As QEMU's ram_handle_compressed: a page already zero is not touched.
            if (fill !== 0 || page.some((b) => b !== 0)) page.fill(fill);
            zeroPageRecords++;
          } else {
            await stream.into(page, "qemu.ram.page");
            mainChannelPages++;
          }
          continue;
        }
        if (flags & (Ram.XBZRLE | Ram.COMPRESS_PAGE | Ram.HOOK)) {
          throw new ProtocolError(
            "qemu.ram.record",
            `flags 0x${flags.toString(16)}: xbzrle, compress or RDMA are not supported`,
          );
        }
        throw new ProtocolError("qemu.ram.record", `unknown flags 0x${flags.toString(16)}`);
      }
    };

    const footer = async (sectionId: number) => {
      const mark = await stream.u8("qemu.section.footer");
      const id = await stream.u32("qemu.section.footer");
      if (mark !== SECTION_FOOTER || id !== sectionId) {
        throw new ProtocolError("qemu.section.footer", `0x${mark.toString(16)} ${id}, expected 0x7e ${sectionId}`);
      }
    };

    // RAM sections until the END of "ram": each ends with an EOS, the barrier of its SYNCs.
    for (let ended = false; !ended;) {
      const type = await stream.u8("qemu.section");
      if (type === Section.START) {
        const sectionId = await stream.u32("qemu.section");
        const name = await stream.idstr("qemu.section");
        await stream.u32("qemu.section"); // instance id
        const version = await stream.u32("qemu.section");
        if (name !== "ram") {
          throw new ProtocolError("qemu.section", `iterable section "${name}": only "ram" is supported`);
        }
        if (ramSection >= 0) throw new ProtocolError("qemu.section", "a second START of ram");
        if (version !== RAM_SECTION_VERSION) throw new ProtocolError("qemu.section", `ram version ${version}`);
        ramSection = sectionId;
        await ramRecords(true);
        if (!pool) throw new ProtocolError("qemu.ram.record", "no MEM_SIZE in the first RAM section");
      } else if (type === Section.PART || type === Section.END) {
        const sectionId = await stream.u32("qemu.section");
        if (sectionId !== ramSection) throw new ProtocolError("qemu.section", `section ${sectionId} is not ram's`);
        await ramRecords(false);
        ended = type === Section.END;
      } else if (type === Section.COMMAND) {
        const command = await stream.u16("qemu.command");
        const length = await stream.u16("qemu.command");
        const data = await stream.bytes(length, "qemu.command");
        if (command !== Command.SWITCHOVER_START) {
          throw new ProtocolError(
            "qemu.command",
            `command ${command} (postcopy, return path and COLO are not supported)`,
          );
        }
        void data;
        commands.push(command);
        continue;
      } else {
        throw new ProtocolError(
          "qemu.section",
          `section type ${type} before the end of RAM (postcopy, commands and other sections are not supported)`,
        );
      }
      sections++;
      await footer(ramSection);
    }

    // Device sections, EOF and vmdesc: verbatim, until QEMU closes the main channel.
    const tail = await stream.rest(MAX_DEVICE_STATE_BYTES, "qemu.state");
    await pool!.all("ended");
    transfer.stopClock();
    for (const region of regions) region.sync();
    const stats = transfer.stats(false);
    await transfer.close();
    if (transfer.failure) throw transfer.failure;

    const state = new Uint8Array(head.length + tail.length);
    state.set(head);
    state.set(tail, head.length);
    writeFileSync(join(dir, "state.bin"), state);
    const result: QemuReceiveResult = {
      ...stats,
      streamFormat: syncPerPass ? "8.1+" : "7.2",
      machine,
      blocks: order,
      zeroPageRecords,
      mainChannelPages,
      sections,
      commands,
      stateBytes: state.length,
    };
    writeFileSync(
      join(dir, "manifest.json"),
      JSON.stringify({ ...result, stateHeaderBytes: head.length }, null, 2) + "\n",
    );
    return result;
  }
}

function pushU32(out: number[], value: number): void {
  out.push(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
}
