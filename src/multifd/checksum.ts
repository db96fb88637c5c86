/**
 * The region checksum both sides compare after the final round: Wyhash-64 of each 64 MiB
 * block (seeded with the block index), then Wyhash-64 of those block hashes (seeded with
 * the region size). Blocks are independent, so channel Workers hash them in parallel and
 * the result does not depend on how many there are.
 * @module
 */
import { addressOf, native } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";
import { checkAbort, type SharedState } from "./shared_state.ts";

export const CHECKSUM_BLOCK_BYTES = 64 << 20;

export function blockCount(size: number): number {
  return Math.ceil(size / CHECKSUM_BLOCK_BYTES);
}

/**
 * Hashes the given blocks of a region (runs at memory speed, in the calling thread). Stops
 * between blocks once the transfer is aborted, so an abort never waits for a whole region.
 */
export function hashBlocks(region: RegionDescriptor, blocks: readonly number[], state: SharedState): bigint[] {
  const out = new BigUint64Array(1);
  return blocks.map((block) => {
    checkAbort(state);
    const offset = block * CHECKSUM_BLOCK_BYTES;
    const length = Math.min(CHECKSUM_BLOCK_BYTES, region.size - offset);
    native.zc_checksum(region.address + offset, length, block, out);
    return out[0];
  });
}

/** Combines every block's hash, in block order, into the region checksum. */
export function combineBlockHashes(hashes: readonly bigint[], size: number): bigint {
  const all = BigUint64Array.from(hashes);
  const out = new BigUint64Array(1);
  native.zc_checksum(hashes.length === 0 ? 0 : addressOf(all), all.byteLength, size, out);
  return out[0];
}

/** Splits block indices round-robin among `workers`. */
export function assignBlocks(size: number, workers: number): number[][] {
  const assignment: number[][] = Array.from({ length: workers }, () => []);
  for (let block = 0; block < blockCount(size); block++) assignment[block % workers].push(block);
  return assignment;
}
