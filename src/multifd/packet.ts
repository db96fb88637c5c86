/**
 * The page arithmetic every wire format shares, as plain functions over reusable buffers
 * (no socket, no allocation per packet): which region offsets a packet of a round
 * carries, where their bytes are (contiguous pages merged into one range, the last page
 * of the region possibly short), and the native zero-page scan and zero-fill.
 * @module
 */
import { native } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";

const TWO_32 = 0x1_0000_0000;

/** (address, length) pairs for one vectored syscall, refilled packet after packet. */
export class Ranges {
  readonly addresses: number[] = [];
  readonly lengths: number[] = [];

  get count(): number {
    return this.addresses.length;
  }

  clear(): void {
    this.addresses.length = 0;
    this.lengths.length = 0;
  }

  /** Appends a range; one that starts where the last ends extends it instead. */
  push(address: number, length: number): void {
    const last = this.addresses.length - 1;
    if (last >= 0 && this.addresses[last] + this.lengths[last] === address) this.lengths[last] += length;
    else this.addresses.push(address), this.lengths.push(length);
  }
}

/** Bytes of the page at `offset` (the region's last page may be short). */
export function pageLength(offset: number, pageSize: number, regionSize: number): number {
  return Math.min(pageSize, regionSize - offset);
}

/**
 * Writes the region offsets of pages [first, first + count) of a round to `out`: page
 * indices from `pages`, or with `pages` null, the region's pages in order.
 */
export function packetOffsets(
  pages: Uint32Array | null,
  first: number,
  count: number,
  pageSize: number,
  out: Float64Array,
): void {
  for (let i = 0; i < count; i++) out[i] = (pages ? pages[first + i] : first + i) * pageSize;
}

/** Adds the bytes of the pages at `offsets[0..count)` to `out`; returns how many bytes that is. */
export function pageRanges(
  region: RegionDescriptor,
  pageSize: number,
  offsets: Float64Array,
  count: number,
  out: Ranges,
): number {
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const length = pageLength(offsets[i], pageSize, region.size);
    out.push(region.address + offsets[i], length);
    bytes += length;
  }
  return bytes;
}

/**
 * Native helpers over a packet's offsets: the zero-page scan (sender) and zero-fill
 * (receiver) read offsets as little-endian u64, kept here in one buffer per channel.
 */
export class PageScan {
  readonly #offsets: BigUint64Array;
  readonly #words: Uint32Array;
  readonly #isZero: Uint8Array;

  constructor(readonly region: RegionDescriptor, readonly pageSize: number, pagesPerPacket: number) {
    this.#offsets = new BigUint64Array(pagesPerPacket);
    this.#words = new Uint32Array(this.#offsets.buffer);
    this.#isZero = new Uint8Array(pagesPerPacket);
  }

  /**
   * Splits `offsets[0..count)` into the pages holding data (to `normal`) and the all-zero
   * ones (to `zero`), both in order; returns how many are zero.
   */
  splitZero(offsets: Float64Array, count: number, normal: Float64Array, zero: Float64Array): number {
    this.#load(offsets, 0, count);
    const { address, size } = this.region;
    const zeros = native.zc_find_zero_pages(address, size, this.pageSize, this.#offsets, count, this.#isZero);
    let n = 0;
    let z = 0;
    for (let i = 0; i < count; i++) {
      if (this.#isZero[i]) zero[z++] = offsets[i];
      else normal[n++] = offsets[i];
    }
    return zeros;
  }

  /** Makes the pages at `offsets[from..from + count)` read as zeros (untouched zero pages stay untouched). */
  zeroFill(offsets: Float64Array, from: number, count: number): void {
    this.#load(offsets, from, count);
    native.zc_zero_pages(this.region.address, this.region.size, this.pageSize, this.#offsets, count);
  }

  #load(offsets: Float64Array, from: number, count: number): void {
    const words = this.#words;
    for (let i = 0; i < count; i++) {
      const offset = offsets[from + i];
      words[i * 2] = offset >>> 0;
      words[i * 2 + 1] = Math.floor(offset / TWO_32);
    }
  }
}
