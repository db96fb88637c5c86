/**
 * The page arithmetic every wire format shares, as plain functions over reusable buffers
 * (no socket, no allocation per packet): which region offsets a packet of a round
 * carries, where their bytes are (contiguous pages merged into one range, the last page
 * of the region possibly short), and the zero-page scan and zero-fill. The loops over a
 * packet's pages are native (zig/pages.zig); JS does per-packet work only.
 * @module
 */
import { Errno, native } from "../../ffi/mod.ts";
import { InvalidArgumentError, unbackedPagesError } from "../errors.ts";
import type { RegionDescriptor } from "../region.ts";

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

/**
 * A native page loop's result, which is negative only when an address, size or offset it was
 * given is not a whole number below 2^53 (zig/sys.zig `whole`): a bug of the caller, not bad input.
 */
export function checkedPages(what: string, result: number): number {
  if (result < 0) {
    throw new InvalidArgumentError(`${what}: an address, size or offset is not a whole number below 2^53`);
  }
  return result;
}

/** Stands in for a round's page list when it has none (the region's pages in order). */
const NO_PAGES = new Uint32Array(1);

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
  checkedPages("round offsets", native.zc_round_offsets(pages ?? NO_PAGES, pages ? 1 : 0, first, count, pageSize, out));
}

/** Where zc_page_ranges puts (address, length) pairs and their total, grown as needed (one per Worker). */
let rangePairs = new Float64Array(2 * 512);
const rangeBytes = new Float64Array(1);

/**
 * Adds the bytes of the pages at `offsets[0..count)` to `out`, pages that follow each
 * other as one range; returns how many bytes that is. The per-page loop is native
 * (zig/pages.zig): in JS it was the hottest code of a channel Worker, compiled anew in
 * each Worker's isolate during the transfer.
 */
export function pageRanges(
  region: RegionDescriptor,
  pageSize: number,
  offsets: Float64Array,
  count: number,
  out: Ranges,
): number {
  if (rangePairs.length < 2 * count) rangePairs = new Float64Array(2 * count);
  const pairs = rangePairs;
  const ranges = checkedPages(
    "page ranges",
    native.zc_page_ranges(region.address, region.size, pageSize, offsets, count, pairs, rangeBytes),
  );
  for (let i = 0; i < ranges; i++) out.push(pairs[2 * i], pairs[2 * i + 1]);
  return rangeBytes[0];
}

/** Native page loops over one block's pages (the region, or a QEMU RAM block): zero-page scan and zero-fill. */
export class PageScan {
  constructor(readonly region: RegionDescriptor, readonly pageSize: number) {}

  /**
   * Splits `offsets[0..count)` into the pages holding data (to `normal`) and the all-zero
   * ones (to `zero`), both in order; returns how many are zero. A sparse file's holes are
   * zero pages without being read.
   */
  splitZero(offsets: Float64Array, count: number, normal: Float64Array, zero: Float64Array): number {
    const { address, size, sparseFd } = this.region;
    return checkedPages(
      "zero-page scan",
      native.zc_split_zero_pages(address, size, this.pageSize, offsets, count, normal, zero, sparseFd ?? -1),
    );
  }

  /**
   * Makes the pages at `offsets[from..from + count)` read as zeros (untouched zero pages
   * stay untouched; those in a sparse file's holes are not even read).
   */
  zeroFill(offsets: Float64Array, from: number, count: number): void {
    const list = from === 0 ? offsets : offsets.subarray(from, from + count);
    const { address, size, populate, sparseFd } = this.region;
    const rc = native.zc_zero_pages(address, size, this.pageSize, list, count, populate ? 1 : 0, sparseFd ?? -1);
    if (rc < 0 && rc !== -Errno.EINVAL) throw unbackedPagesError("madvise(MADV_POPULATE_WRITE)", -rc);
    checkedPages("zero fill", rc);
  }
}
