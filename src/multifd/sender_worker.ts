/**
 * One multifd send channel (QEMU: a send thread). Claims packets of the current round
 * from the shared cursor, so work goes to whichever channel is free; reads page data
 * straight from the region by pointer; header by a normal write, pages with zero-copy
 * when enabled. Blocking calls only: this thread has nothing else to do.
 * @module
 */
import { addressOf, native } from "../../ffi/mod.ts";
import { ChannelClosedError } from "../errors.ts";
import type { RegionDescriptor } from "../region.ts";
import { SocketChannel } from "../socket_channel.ts";
import { hashBlocks } from "./checksum.ts";
import type { FromSender, SenderConfig, ToSender } from "./messages.ts";
import { serveChannelWorker } from "./messages.ts";
import { checkAbort, Control, counterIndex, type CounterName, type SharedState } from "./shared_state.ts";
import {
  encodePacketHeader,
  OFFSET_BYTES,
  PACKET_HEADER_BYTES,
  PacketType,
  parseReply,
  REPLY_BYTES,
  ReplyType,
  writeOffset,
} from "./wire.ts";

declare const self: {
  postMessage(message: FromSender): void;
};

class SendChannel {
  readonly #channel: SocketChannel;
  readonly #region: RegionDescriptor;
  readonly #state: SharedState;
  readonly #config: SenderConfig;
  /** Header plus the largest offset list: one reusable buffer at a stable address. */
  readonly #header: Uint8Array;
  readonly #headerView: DataView;
  readonly #headerAddress: number;
  /** Offsets of one packet's pages, little-endian u64 for the native zero-page scan. */
  readonly #offsets: BigUint64Array;
  readonly #offsetWords: Uint32Array;
  readonly #isZero: Uint8Array;
  readonly #reply = new Uint8Array(REPLY_BYTES);
  #packetNumber = 0;

  constructor(fd: number, region: RegionDescriptor, state: SharedState, config: SenderConfig) {
    this.#channel = new SocketChannel(fd, config);
    if (config.zerocopy && !this.#channel.zerocopy) {
      this.#channel.relinquish();
      throw new Error("zero-copy requested but the kernel refused SO_ZEROCOPY on this socket");
    }
    this.#region = region;
    this.#state = state;
    this.#config = config;
    this.#header = new Uint8Array(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#headerView = new DataView(this.#header.buffer);
    this.#headerAddress = addressOf(this.#header);
    this.#offsets = new BigUint64Array(config.pagesPerPacket);
    this.#offsetWords = new Uint32Array(this.#offsets.buffer);
    this.#isZero = new Uint8Array(config.pagesPerPacket);
  }

  /** Sends packets until the round's cursor runs out, then SYNC, flush, and the ack. */
  round(pages: Uint32Array | null, pageCount: number, syncNumber: number): boolean {
    const { pagesPerPacket } = this.#config;
    const packets = Math.ceil(pageCount / pagesPerPacket);
    for (;;) {
      checkAbort(this.#state);
      const packet = Atomics.add(this.#state.control, Control.CURSOR, 1);
      if (packet >= packets) break;
      const first = packet * pagesPerPacket;
      this.#sendPages(pages, first, Math.min(pagesPerPacket, pageCount - first));
    }
    this.#sendControl(PacketType.SYNC, syncNumber);
    const allCopied = this.#channel.flushZerocopySync() === 1;
    this.#readReply(ReplyType.SYNC_ACK);
    this.#countZerocopy();
    this.#add("syncs", 1);
    if (allCopied) this.#add("syncsAllCopied", 1);
    return allCopied;
  }

  /** Ends the stream and returns the receiver's checksum and byte count. */
  end(): { checksum: bigint; bytes: number } {
    this.#sendControl(PacketType.END, 0);
    const reply = this.#readReply(ReplyType.RESULT);
    return { checksum: reply.value, bytes: reply.bytes };
  }

  /** Channel 0 tells the receiver whether the checksums matched; the others just close. */
  verdict(matched: boolean): void {
    if (this.#config.channelId === 0) this.#sendControl(PacketType.VERDICT, matched ? 1 : 0);
  }

  /** Done with the socket; the main thread, which owns the fd, closes it. */
  relinquish(): void {
    this.#channel.relinquish();
  }

  #sendPages(pages: Uint32Array | null, first: number, count: number): void {
    const { pageSize, zeroPages, zerocopy } = this.#config;
    const { address, size } = this.#region;
    const words = this.#offsetWords;
    for (let i = 0; i < count; i++) {
      const offset = (pages ? pages[first + i] : first + i) * pageSize;
      words[i * 2] = offset >>> 0;
      words[i * 2 + 1] = Math.floor(offset / 0x1_0000_0000);
    }
    const zeroCount = zeroPages
      ? native.zc_find_zero_pages(address, size, pageSize, this.#offsets, count, this.#isZero)
      : 0;
    if (!zeroPages) this.#isZero.fill(0, 0, count);

    // Offsets in the header: normal pages first, then zero pages; page data as ranges,
    // contiguous pages merged into one iovec.
    const view = this.#headerView;
    const addresses = [this.#headerAddress];
    const lengths = [0];
    let normalAt = 0;
    let zeroAt = count - zeroCount;
    let payload = 0;
    for (let i = 0; i < count; i++) {
      const offset = words[i * 2 + 1] * 0x1_0000_0000 + words[i * 2];
      if (this.#isZero[i]) {
        writeOffset(view, PACKET_HEADER_BYTES + zeroAt++ * OFFSET_BYTES, offset);
        continue;
      }
      writeOffset(view, PACKET_HEADER_BYTES + normalAt++ * OFFSET_BYTES, offset);
      const length = Math.min(pageSize, size - offset);
      const last = addresses.length - 1;
      if (last > 0 && addresses[last] + lengths[last] === address + offset) lengths[last] += length;
      else addresses.push(address + offset), lengths.push(length);
      payload += length;
    }
    encodePacketHeader(view, {
      type: PacketType.DATA,
      packetNumber: this.#packetNumber++,
      normalPages: count - zeroCount,
      zeroPages: zeroCount,
      payloadBytes: payload,
      argument: 0,
    });
    lengths[0] = PACKET_HEADER_BYTES + count * OFFSET_BYTES;
    if (zerocopy && payload > 0) {
      // As QEMU: the small header is copied, only page data goes zero-copy.
      this.#channel.writeRangesSync(addresses.slice(0, 1), lengths.slice(0, 1), false);
      this.#channel.writeRangesSync(addresses.slice(1), lengths.slice(1), true);
    } else {
      this.#channel.writeRangesSync(addresses, lengths, false);
    }
    this.#add("bytes", payload);
    this.#add("packets", 1);
    this.#add("pagesNormal", count - zeroCount);
    this.#add("pagesZero", zeroCount);
  }

  #sendControl(type: number, argument: number): void {
    checkAbort(this.#state);
    encodePacketHeader(this.#headerView, {
      type,
      packetNumber: this.#packetNumber++,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: 0,
      argument,
    });
    this.#channel.writeRangesSync([this.#headerAddress], [PACKET_HEADER_BYTES], false);
  }

  #readReply(type: number) {
    const n = this.#channel.readFullSync(this.#reply);
    if (n < REPLY_BYTES) throw new ChannelClosedError("the receiver closed the connection");
    return parseReply(this.#reply, type);
  }

  #countZerocopy(): void {
    const stats = this.#channel.stats;
    const { counters } = this.#state;
    counters[counterIndex(this.#config.channelId, "zerocopySends")] = stats.zerocopySends;
    counters[counterIndex(this.#config.channelId, "zerocopyCompletions")] = stats.zerocopyCompletions;
    counters[counterIndex(this.#config.channelId, "zerocopyCopied")] = stats.zerocopyCopied;
  }

  #add(name: CounterName, amount: number): void {
    this.#state.counters[counterIndex(this.#config.channelId, name)] += amount;
  }
}

let channel: SendChannel | undefined;
let region: RegionDescriptor | undefined;
let state: SharedState | undefined;

function handle(message: ToSender): void {
  switch (message.kind) {
    case "start":
      region = message.region;
      state = message.state;
      channel = new SendChannel(message.fd, message.region, message.state, message.config);
      return;
    case "round": {
      const allCopied = channel!.round(message.pages, message.pageCount, message.syncNumber);
      self.postMessage({ kind: "synced", syncNumber: message.syncNumber, allCopied });
      return;
    }
    case "checksum":
      self.postMessage({ kind: "hashes", blocks: message.blocks, hashes: hashBlocks(region!, message.blocks, state!) });
      return;
    case "end": {
      const result = channel!.end();
      self.postMessage({ kind: "result", ...result });
      return;
    }
    case "verdict":
      channel!.verdict(message.matched);
      channel!.relinquish();
      self.postMessage({ kind: "done" });
      return;
  }
}

serveChannelWorker(handle, () => channel?.relinquish());
