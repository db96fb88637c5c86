/**
 * One multifd receive channel (QEMU: a receive thread). Reads each header, validates
 * every field and offset, then receives the page data straight into the region at those
 * offsets with one scatter recvmsg: no intermediate buffer. At SYNC it waits at the
 * shared barrier until every channel has reached it, so a page of a later round can
 * never be overwritten by an older copy arriving on another channel.
 * @module
 */
import { addressOf, native } from "../../ffi/mod.ts";
import { ChannelClosedError, TimeoutError } from "../errors.ts";
import type { RegionDescriptor } from "../region.ts";
import { SocketChannel } from "../socket_channel.ts";
import { hashBlocks } from "./checksum.ts";
import type { ChannelConfig, FromReceiver, ToReceiver } from "./messages.ts";
import { serveChannelWorker } from "./messages.ts";
import { checkAbort, Control, counterIndex, type CounterName, type SharedState } from "./shared_state.ts";
import {
  encodeReply,
  OFFSET_BYTES,
  PACKET_HEADER_BYTES,
  PacketType,
  parseOffsets,
  parsePacketHeader,
  ProtocolError,
  ReplyType,
} from "./wire.ts";

declare const self: {
  postMessage(message: FromReceiver): void;
};

class ReceiveChannel {
  readonly #channel: SocketChannel;
  readonly #region: RegionDescriptor;
  readonly #state: SharedState;
  readonly #config: ChannelConfig;
  /** Header, then the offsets: one buffer whose address is taken once (not per read). */
  readonly #packet: Uint8Array;
  readonly #packetAddress: number;
  readonly #headerView: DataView;
  readonly #offsetsView: DataView;
  readonly #offsets: Float64Array;
  /** Zero-page offsets, little-endian u64 for the native zero-fill. */
  readonly #zeroOffsets: BigUint64Array;
  readonly #zeroWords: Uint32Array;
  #packetNumber = 0;
  #syncNumber = 0;

  constructor(fd: number, region: RegionDescriptor, state: SharedState, config: ChannelConfig) {
    this.#channel = new SocketChannel(fd, config);
    this.#region = region;
    this.#state = state;
    this.#config = config;
    this.#packet = new Uint8Array(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#packetAddress = addressOf(this.#packet);
    this.#headerView = new DataView(this.#packet.buffer, 0, PACKET_HEADER_BYTES);
    this.#offsetsView = new DataView(this.#packet.buffer, PACKET_HEADER_BYTES);
    this.#offsets = new Float64Array(config.pagesPerPacket);
    this.#zeroOffsets = new BigUint64Array(config.pagesPerPacket);
    this.#zeroWords = new Uint32Array(this.#zeroOffsets.buffer);
  }

  /** Receives until END. Posts "sync" at each barrier and "ended" at the end. */
  run(): void {
    for (;;) {
      const header = this.#readHeader();
      if (header.type === PacketType.DATA) this.#receivePages(header);
      else if (header.type === PacketType.SYNC) this.#sync(header.argument);
      else if (header.type === PacketType.END) return;
      else throw new ProtocolError("packet.type", `unexpected packet type ${header.type} before END`);
    }
  }

  sendResult(checksum: bigint, bytes: number): void {
    this.#channel.writevSync([encodeReply({ type: ReplyType.RESULT, value: checksum, bytes, status: 0 })]);
  }

  /** Reads the sender's VERDICT packet: whether its checksum matched ours. */
  readVerdict(): boolean {
    const header = this.#readHeader();
    if (header.type !== PacketType.VERDICT) {
      throw new ProtocolError("packet.type", `expected VERDICT, got type ${header.type}`);
    }
    return header.argument === 1;
  }

  /** Done with the socket; the main thread, which owns the fd, closes it. */
  relinquish(): void {
    this.#channel.relinquish();
  }

  #readHeader() {
    checkAbort(this.#state);
    if (this.#channel.readRangesSync([this.#packetAddress], [PACKET_HEADER_BYTES]) < PACKET_HEADER_BYTES) {
      throw new ChannelClosedError("the sender closed the connection before the end of the stream");
    }
    const header = parsePacketHeader(this.#headerView, {
      expectedPacketNumber: this.#packetNumber,
      pagesPerPacket: this.#config.pagesPerPacket,
      pageSize: this.#config.pageSize,
    });
    this.#packetNumber++;
    return header;
  }

  #receivePages(header: ReturnType<typeof parsePacketHeader>): void {
    const { pageSize } = this.#config;
    const { address, size } = this.#region;
    const count = header.normalPages + header.zeroPages;
    const offsetBytes = count * OFFSET_BYTES;
    this.#readExactly(this.#packetAddress + PACKET_HEADER_BYTES, offsetBytes);
    const offsets = this.#offsets;
    parseOffsets(this.#offsetsView, header, size, pageSize, offsets);

    if (header.normalPages > 0) {
      const addresses: number[] = [];
      const lengths: number[] = [];
      for (let i = 0; i < header.normalPages; i++) {
        const length = Math.min(pageSize, size - offsets[i]);
        const last = addresses.length - 1;
        if (last >= 0 && addresses[last] + lengths[last] === address + offsets[i]) lengths[last] += length;
        else addresses.push(address + offsets[i]), lengths.push(length);
      }
      if (this.#channel.readRangesSync(addresses, lengths) < header.payloadBytes) {
        throw new ChannelClosedError("the sender closed the connection in the middle of a packet");
      }
    }
    if (header.zeroPages > 0) {
      for (let i = 0; i < header.zeroPages; i++) {
        const offset = offsets[header.normalPages + i];
        this.#zeroWords[i * 2] = offset >>> 0;
        this.#zeroWords[i * 2 + 1] = Math.floor(offset / 0x1_0000_0000);
      }
      native.zc_zero_pages(address, size, pageSize, this.#zeroOffsets, header.zeroPages);
    }
    this.#add("bytes", header.payloadBytes);
    this.#add("packets", 1);
    this.#add("pagesNormal", header.normalPages);
    this.#add("pagesZero", header.zeroPages);
  }

  #sync(syncNumber: number): void {
    if (syncNumber !== this.#syncNumber) {
      throw new ProtocolError("packet.argument", `SYNC ${syncNumber}, expected ${this.#syncNumber}`);
    }
    this.#syncNumber++;
    const { control } = this.#state;
    const generation = Atomics.load(control, Control.BARRIER);
    // An abort raises the flag before it bumps the barrier: if the bump came before our
    // load, the flag is up now; if after, the wait below returns at once.
    checkAbort(this.#state);
    self.postMessage({ kind: "sync", syncNumber });
    // -1 means no limit; Atomics.wait would take a negative timeout as 0.
    const limit = this.#config.ioTimeoutMs < 0 ? Infinity : this.#config.ioTimeoutMs;
    const waited = Atomics.wait(control, Control.BARRIER, generation, limit);
    checkAbort(this.#state);
    if (waited === "timed-out") {
      throw new TimeoutError("sync barrier", this.#config.ioTimeoutMs, "another channel never reached the sync");
    }
    this.#channel.writevSync([
      encodeReply({ type: ReplyType.SYNC_ACK, value: BigInt(syncNumber), bytes: 0, status: 0 }),
    ]);
    this.#add("syncs", 1);
  }

  #readExactly(address: number, length: number): void {
    if (this.#channel.readRangesSync([address], [length]) < length) {
      throw new ChannelClosedError("the sender closed the connection in the middle of a packet");
    }
  }

  #add(name: CounterName, amount: number): void {
    this.#state.counters[counterIndex(this.#config.channelId, name)] += amount;
  }
}

let channel: ReceiveChannel | undefined;
let region: RegionDescriptor | undefined;
let state: SharedState | undefined;

function handle(message: ToReceiver): void {
  switch (message.kind) {
    case "start":
      region = message.region;
      state = message.state;
      channel = new ReceiveChannel(message.fd, message.region, message.state, message.config);
      channel.run();
      self.postMessage({ kind: "ended" });
      return;
    case "checksum":
      self.postMessage({ kind: "hashes", blocks: message.blocks, hashes: hashBlocks(region!, message.blocks, state!) });
      return;
    case "result": {
      channel!.sendResult(message.checksum, message.bytes);
      const verdict = message.awaitVerdict ? channel!.readVerdict() : undefined;
      channel!.relinquish();
      self.postMessage({ kind: "done", verdict });
      return;
    }
  }
}

serveChannelWorker(handle, () => channel?.relinquish());
