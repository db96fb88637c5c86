/**
 * The region checksum both sides compare after the final round: a keyed MAC, so that
 * whoever alters pages on the way cannot make both sides agree (a plain hash such as
 * Wyhash an attacker can recompute, or steer into a collision). BLAKE3 in keyed mode (Zig's
 * std.crypto; 256-bit output) under the session's checksum key (auth.ts, known only to the
 * two ends), of each 64 MiB block prefixed with its index, then of those tags in block order
 * prefixed with the region size, in another domain. Blocks are independent, so channel
 * Workers hash them in parallel and the result does not depend on how many there are.
 * BLAKE3 gives the same result on every CPU, at 1.56 GB/s per core here in the baseline
 * x86-64 build and 2.7 GB/s in the x86-64-v3 one (ffi/library_path.ts picks). AEGIS-128L-MAC
 * would be faster where the CPU has AES instructions, but in the baseline build std.crypto's
 * AES is software (0.07 GB/s), and both ends must compute the same function.
 * @module
 */
import { addressOf, native } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";
import { checkAbort, type SharedState } from "./shared_state.ts";

export const CHECKSUM_BLOCK_BYTES = 64 << 20;
/** Bytes of a checksum (and of each block's tag). */
export const CHECKSUM_BYTES = 32;
/** Bytes of the checksum key. */
export const CHECKSUM_KEY_BYTES = 32;

const Domain = { BLOCK: 0, REGION: 1 } as const;

export function blockCount(size: number): number {
  return Math.ceil(size / CHECKSUM_BLOCK_BYTES);
}

function mac(address: number, length: number, key: Uint8Array, domain: number, index: number): Uint8Array {
  const out = new Uint8Array(CHECKSUM_BYTES);
  native.zc_region_mac(address, length, key, domain, index, out);
  return out;
}

/**
 * Tags the given blocks of a region (at memory speed, in the calling thread). Stops
 * between blocks once the transfer is aborted, so an abort never waits for a whole region.
 */
export function hashBlocks(
  region: RegionDescriptor,
  blocks: readonly number[],
  key: Uint8Array,
  state: SharedState,
): Uint8Array[] {
  return blocks.map((block) => {
    checkAbort(state);
    const offset = block * CHECKSUM_BLOCK_BYTES;
    return mac(region.address + offset, Math.min(CHECKSUM_BLOCK_BYTES, region.size - offset), key, Domain.BLOCK, block);
  });
}

/** Combines every block's tag, in block order, into the region checksum. */
export function combineBlockHashes(tags: readonly Uint8Array[], size: number, key: Uint8Array): Uint8Array {
  const all = new Uint8Array(tags.length * CHECKSUM_BYTES);
  tags.forEach((tag, i) => all.set(tag, i * CHECKSUM_BYTES));
  return mac(all.length === 0 ? 0 : addressOf(all), all.length, key, Domain.REGION, size);
}

/** Splits block indices round-robin among `workers`. */
export function assignBlocks(size: number, workers: number): number[][] {
  const assignment: number[][] = Array.from({ length: workers }, () => []);
  for (let block = 0; block < blockCount(size); block++) assignment[block % workers].push(block);
  return assignment;
}
