/**
 * QEMU's multifd channel format (QEMU 7.2 to 10.0; src/qemu/wire.ts) behind the codec seam:
 * each packet is a 1344-byte header naming a RAM block and up to 128 page offsets, then
 * those pages (pages listed as zero, QEMU ≥ 9.0, are zero-filled in place); a packet with the SYNC flag ends a section's part of that channel (after its pages,
 * if it has any). QEMU sends nothing but packets after the channel's opening, expects no
 * reply, and ends a channel by closing it. Receiving only (the sending half is the next
 * step of QEMU interop).
 * @module
 */
import { addressOf } from "../../ffi/mod.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { RegionDescriptor } from "../region.ts";
import type {
  CodecConfig,
  Incoming,
  Populate,
  ReadRanges,
  ReceiveCodec,
  SendCodec,
  WireFormat,
} from "../multifd/codec.ts";
import { PageScan, Ranges } from "../multifd/packet.ts";
import {
  MULTIFD_FLAG_SYNC,
  MULTIFD_PACKET_HEADER_BYTES,
  MULTIFD_PAGES_PER_PACKET,
  parseMultifdPacket,
  QEMU_PAGE_SIZE,
} from "./wire.ts";

class QemuReceiveCodec implements ReceiveCodec {
  readonly #blocks = new Map<string, RegionDescriptor>();
  /** Per block, the native zero-fill of zero pages listed in packets (QEMU ≥ 9.0). */
  readonly #zeroFill = new Map<string, PageScan>();
  readonly #populate: Populate;
  readonly #header = new Uint8Array(MULTIFD_PACKET_HEADER_BYTES);
  readonly #headerAddress = addressOf(this.#header);
  readonly #offsets = new Float64Array(MULTIFD_PAGES_PER_PACKET);
  readonly #ranges = new Ranges();
  readonly #blockSize = (name: string) => this.#blocks.get(name)?.size;
  #syncs = 0;

  constructor(config: CodecConfig, populate: Populate) {
    for (const block of config.qemu?.ramBlocks ?? []) {
      this.#blocks.set(block.name, block.region);
      this.#zeroFill.set(block.name, new PageScan(block.region, QEMU_PAGE_SIZE, MULTIFD_PAGES_PER_PACKET));
    }
    this.#populate = populate;
  }

  next(read: ReadRanges): Incoming {
    if (!read([this.#headerAddress], [MULTIFD_PACKET_HEADER_BYTES], true)) return { kind: "end" };
    const header = parseMultifdPacket(this.#header, this.#blockSize, this.#offsets);
    const { normalPages, zeroPages } = header;
    if (normalPages > 0) {
      const region = this.#blocks.get(header.ramBlock)!;
      const ranges = this.#ranges;
      ranges.clear();
      for (let i = 0; i < normalPages; i++) ranges.push(region.address + this.#offsets[i], QEMU_PAGE_SIZE);
      this.#populate(ranges.addresses, ranges.lengths, true);
      read(ranges.addresses, ranges.lengths);
    }
    if (zeroPages > 0) this.#zeroFill.get(header.ramBlock)!.zeroFill(this.#offsets, normalPages, zeroPages);
    const payloadBytes = normalPages * QEMU_PAGE_SIZE;
    if (header.flags & MULTIFD_FLAG_SYNC) return { kind: "sync", syncNumber: this.#syncs++, normalPages, payloadBytes };
    return { kind: "data", normalPages, zeroPages, payloadBytes };
  }

  /** QEMU's destination answers nothing. */
  syncAck(): Uint8Array {
    return new Uint8Array(0);
  }

  result(): Uint8Array {
    throw new InvalidArgumentError("QEMU's format has no end-of-stream result");
  }
}

/** QEMU 7.2's multifd channels (receiving). */
export const qemuFormat: WireFormat = {
  sender: (): SendCodec => {
    throw new InvalidArgumentError("sending in QEMU's format is not implemented yet");
  },
  receiver: (config, _region, populate) => new QemuReceiveCodec(config, populate),
};
