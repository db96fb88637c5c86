/**
 * The source of a migration into a real QEMU destination (`-incoming defer`, capability
 * multifd on, the same `multifd-channels`, then `migrate-incoming tcp:HOST:PORT`): replays a
 * directory that {@link QemuMigrationReceiver} wrote (every RAM block of it). The main channel carries the stream
 * header and configuration and the device state as they were received (state.bin), and the
 * RAM sections around them; every page goes over the N multifd channels (the module's
 * channel Workers, QEMU's packets behind the codec seam, zero-copy if asked), one SYNC per
 * channel before each end of section, as QEMU's own source does (docs/QEMU.md).
 * @module
 */
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { abortedBySignal, InvalidArgumentError, type TransferAbortedError } from "../errors.ts";
import { connect, DEFAULT_CONNECT_TIMEOUT_MS } from "../connect.ts";
import { integerOption } from "../options.ts";
import { Region } from "../region.ts";
import { resolveChannelOptions, SAME_HOST_SEND_BUFFER_BYTES } from "../channel_options.ts";
import type { SocketChannel } from "../socket_channel.ts";
import type { FromSender, SenderConfig, ToSender } from "../multifd/messages.ts";
import { Control } from "../multifd/shared_state.ts";
import type { TransferStats } from "../multifd/stats.ts";
import { Transfer } from "../multifd/transfer.ts";
import { MAX_QEMU_CHANNELS, type QemuRamBlock } from "./receiver.ts";
import { encodeMultifdInit, MULTIFD_PAGES_PER_PACKET, QEMU_PAGE_SIZE } from "./wire.ts";

/** Where a {@link QemuMigrationSender} sends and how. */
export interface QemuSenderOptions {
  /** The QEMU destination's `migrate-incoming` host. */
  hostname: string;
  /** Its `migrate-incoming` port. */
  port: number;
  /** Its `multifd-channels`. Default 2. */
  channels?: number;
  /** Page data with MSG_ZEROCOPY (as QEMU's zero-copy-send). Default false. */
  zerocopy?: boolean;
  /**
   * The stream format the destination reads: "7.2" (a sync per RAM section) or "8.1+"
   * (QEMU 8.1 to 10.0 with a machine type without the 8.0 compat: a MULTIFD_FLUSH record
   * per sync). Default: the format the directory was received in.
   */
  format?: "7.2" | "8.1+";
  /**
   * Send all-zero pages as ZERO records on the main channel (9 bytes each), as QEMU's own
   * source does, instead of as pages. Default true.
   */
  zeroPages?: boolean;
  /**
   * SO_SNDBUF of every multifd channel, in bytes. Default: {@link SAME_HOST_SEND_BUFFER_BYTES}
   * (256 KiB) when the destination is on this host — a short send queue keeps the kernel's
   * copy on the sending side, as for {@link MultifdSender} — else the kernel's autotuning.
   */
  sendBufferBytes?: number;
  /** Limit for each TCP connect, in ms. Default 10 s. */
  connectTimeoutMs?: number;
  /** Longest a channel may go without progress, in ms (-1: no limit). Default 60 s. */
  ioTimeoutMs?: number;
  /**
   * Aborts the send at any point: every channel is shut down, the Workers exit, `send`
   * rejects with TransferAbortedError. (QEMU's destination then fails its migration.)
   */
  signal?: AbortSignal;
}

/** What {@link QemuMigrationSender.send} resolves with. */
export interface QemuSendResult extends TransferStats {
  /** The stream format sent. */
  streamFormat: "7.2" | "8.1+";
  /** The RAM blocks sent. */
  blocks: QemuRamBlock[];
  /** SO_SNDBUF of every multifd channel as set (undefined: the kernel's autotuning). See {@link QemuSenderOptions.sendBufferBytes}. */
  sendBufferBytes: number | undefined;
}

const Section = { START: 0x01, PART: 0x02, END: 0x03 };
const Ram = { ZERO: 0x02, MEM_SIZE: 0x04, EOS: 0x10, CONTINUE: 0x20, MULTIFD_FLUSH: 0x200 };
const SECTION_FOOTER = 0x7e;
/** A ZERO record: the page's offset with its flags (8 bytes), then the fill byte. */
const ZERO_RECORD_BYTES = 9;
const RAM_SECTION_ID = 2;
const RAM_SECTION_VERSION = 4;

/**
 * Migrates a directory written by `qemu-recv` into a real QEMU.
 *
 * @example Replay a received guest into a QEMU started with `-incoming defer`
 * ```ts
 * import { QemuMigrationSender } from "zerocopy-multifd";
 *
 * const result = await QemuMigrationSender.send("guest-state", { hostname: "127.0.0.1", port: 4445, channels: 4 });
 * console.log(result.GBps);
 * ```
 */
export class QemuMigrationSender {
  private constructor() {}

  /** Sends `dir` to the destination; resolves once every byte is written and the channels closed. */
  static async send(dir: string, options: QemuSenderOptions): Promise<QemuSendResult> {
    const started = performance.now();
    const signal = options.signal;
    if (signal?.aborted) throw abortedBySignal(signal);
    const channels = integerOption("channels", options.channels, 2, 1, MAX_QEMU_CHANNELS);
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
    const format = options.format ?? manifest.streamFormat;
    if (format !== "7.2" && format !== "8.1+") {
      throw new InvalidArgumentError(`format must be "7.2" or "8.1+", got ${format}`);
    }
    const blocks = manifest.blocks as QemuRamBlock[];
    if (!Array.isArray(blocks) || blocks.length === 0) throw new InvalidArgumentError(`${dir}: no RAM blocks`);
    const state = readFileSync(join(dir, "state.bin"));
    const headBytes = Number(manifest.stateHeaderBytes);
    if (!(headBytes >= 8 && headBytes <= state.length)) throw new InvalidArgumentError(`${dir}: bad stateHeaderBytes`);
    const regions: Region[] = [];
    const transfer = new Transfer(channels, "none");
    // The first failure is the cause: an abort ends the main channel's writes and the
    // Workers' sends with errors of their own, which say nothing of why.
    let aborted: TransferAbortedError | undefined;
    let main: SocketChannel | undefined;
    const onAbort = () => {
      aborted ??= abortedBySignal(signal);
      main?.close();
      void transfer.abort(aborted);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    /** Between set-up steps: an abort, or a Worker that failed, ends the send here. */
    const throwIfEnded = () => {
      const ended = aborted ?? transfer.failure;
      if (ended) throw ended;
    };
    // The channel Workers start while the files are mapped and the channels connect.
    const starting = transfer.startPool<ToSender, FromSender>(channels);
    starting.catch(() => {}); // awaited below, unless the transfer fails first
    try {
      for (const block of blocks) {
        const region = Region.openFile(join(dir, basename(block.file)));
        regions.push(region);
        transfer.holdRegion(region);
        if (region.size !== block.bytes) throw new InvalidArgumentError(`${block.file} is not ${block.bytes} bytes`);
      }
      const ramBlocks = blocks.map((block, i) => ({ name: block.name, region: regions[i].descriptor }));
      const connectOptions = {
        hostname: options.hostname,
        port: options.port,
        connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
        ioTimeoutMs: options.ioTimeoutMs,
      };
      // The main channel first: a 7.2 destination takes its first connection for it.
      main = await connect(connectOptions);
      throwIfEnded();
      await main.writev([state.subarray(0, headBytes)]);
      // Each channel is the transfer's once its opening is written (the array is shared with
      // it), so a failure or an abort half-way closes those already open.
      const fds: number[] = [];
      transfer.adoptFds(fds);
      for (let id = 0; id < channels; id++) {
        const channel = await connect(connectOptions);
        try {
          throwIfEnded();
          await channel.writev([encodeMultifdInit(id)]);
          throwIfEnded();
        } catch (error) {
          channel.close();
          throw error;
        }
        fds.push(channel.detach());
      }
      const sendBufferBytes = options.sendBufferBytes ??
        (main.peerOnThisHost ? SAME_HOST_SEND_BUFFER_BYTES : undefined);
      const pool = await starting;
      const channelOptions = resolveChannelOptions({
        zerocopy: options.zerocopy,
        ioTimeoutMs: options.ioTimeoutMs,
        sendBufferBytes,
      });
      fds.forEach((fd, channelId) => {
        const config: SenderConfig = {
          ...channelOptions,
          channelId,
          pageSize: QEMU_PAGE_SIZE,
          pagesPerPacket: MULTIFD_PAGES_PER_PACKET,
          zeroPages: options.zeroPages !== false,
          zerocopyFallback: true,
          zerocopyBudgetBytes: -1,
          qemu: { ramBlocks },
        };
        pool.post(channelId, {
          kind: "start",
          role: "send",
          fd,
          region: ramBlocks[0].region,
          state: transfer.state,
          config,
        });
      });
      transfer.startClock(started);

      const out = main;
      const none = new Uint32Array(new SharedArrayBuffer(0));
      /** One RAM section: its header, the pages (every channel ends with SYNC), then the end of section. */
      const section = async (
        header: Uint8Array,
        pages: Uint32Array<SharedArrayBuffer> | null,
        pageCount: number,
        block = 0,
      ) => {
        await out.writev([header]);
        Atomics.store(transfer.state.control, Control.CURSOR, 0);
        for (let id = 0; id < channels; id++) {
          pool.post(id, { kind: "round", pages, pageCount, syncNumber: transfer.rounds, block });
        }
        // The channels' zero pages go as ZERO records, one write after another, all before
        // the end of section (each channel posts its last ones before "synced").
        let records = Promise.resolve();
        await Promise.all(Array.from({ length: channels }, async (_, id) => {
          for (;;) {
            const message = await pool.next(id, "zeroPages", "synced");
            if (message.kind === "synced") return;
            const bytes = zeroRecords(blocks[block].name, message.offsets);
            records = records.then(() => out.writev([bytes]).then(() => {}));
            records.catch(() => {}); // awaited below, unless a failed channel ends the loop first
          }
        }));
        await records;
        transfer.rounds++;
        const end = new StreamBytes();
        if (format === "8.1+") end.u64(Ram.MULTIFD_FLUSH);
        end.u64(Ram.EOS).u8(SECTION_FOOTER).u32(RAM_SECTION_ID);
        await out.writev([end.bytes()]);
      };
      const total = blocks.reduce((sum, block) => sum + block.bytes, 0);
      const start = new StreamBytes().u8(Section.START).u32(RAM_SECTION_ID).idstr("ram").u32(0).u32(RAM_SECTION_VERSION)
        .u64(total + Ram.MEM_SIZE);
      for (const block of blocks) start.idstr(block.name).u64(block.bytes);
      await section(start.bytes(), none, 0);
      // One PART per block: a packet names one block, and every sync needs its end of section.
      for (let i = 0; i < blocks.length; i++) {
        const part = new StreamBytes().u8(Section.PART).u32(RAM_SECTION_ID).bytes();
        await section(part, null, Math.ceil(regions[i].size / QEMU_PAGE_SIZE), i);
      }
      await section(new StreamBytes().u8(Section.END).u32(RAM_SECTION_ID).bytes(), none, 0);
      // Device sections, EOF and vmdesc, as received.
      await out.writev([state.subarray(headBytes)]);
      transfer.stopClock();
      const stats = transfer.stats(options.zerocopy === true);
      await transfer.close();
      if (transfer.failure) throw transfer.failure;
      return { ...stats, streamFormat: format, blocks, sendBufferBytes };
    } catch (error) {
      const cause = aborted ?? error as Error;
      await transfer.abort(cause);
      throw cause;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      main?.close();
      for (const region of regions) await region.close();
    }
  }
}

/**
 * ZERO records for the pages at `offsets` in block `name`: the first names the block, the
 * others CONTINUE it; each is the page's offset with the flags, then the fill byte 0. Written
 * straight into one array (a batch is up to 16,384 records; StreamBytes goes byte by byte).
 */
function zeroRecords(name: string, offsets: Float64Array): Uint8Array {
  if (offsets.length === 0) return new Uint8Array(0);
  const id = new StreamBytes().idstr(name).bytes();
  const bytes = new Uint8Array(offsets.length * ZERO_RECORD_BYTES + id.length);
  const view = new DataView(bytes.buffer);
  let at = 0;
  for (let i = 0; i < offsets.length; i++) {
    const offset = offsets[i] + Ram.ZERO + (i > 0 ? Ram.CONTINUE : 0);
    view.setUint32(at, Math.floor(offset / 0x1_0000_0000));
    view.setUint32(at + 4, offset >>> 0);
    at += 8;
    if (i === 0) {
      bytes.set(id, at); // the first record names the block
      at += id.length;
    }
    bytes[at++] = 0; // the fill byte
  }
  return bytes;
}

/** Builds main-channel bytes (QEMUFile's big-endian puts). */
class StreamBytes {
  readonly #parts: number[] = [];

  u8(value: number): this {
    this.#parts.push(value & 0xff);
    return this;
  }

  u32(value: number): this {
    for (let shift = 24; shift >= 0; shift -= 8) this.#parts.push((value >>> shift) & 0xff);
    return this;
  }

  u64(value: number): this {
    return this.u32(Math.floor(value / 0x1_0000_0000)).u32(value >>> 0);
  }

  idstr(text: string): this {
    const bytes = new TextEncoder().encode(text);
    this.u8(bytes.length);
    for (const b of bytes) this.#parts.push(b);
    return this;
  }

  bytes(): Uint8Array {
    return Uint8Array.from(this.#parts);
  }
}
