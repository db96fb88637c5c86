/**
 * The region checksum both sides compare after the final round: a keyed MAC, so that
 * whoever alters pages on the way cannot make both sides agree (a plain hash such as
 * Wyhash an attacker can recompute, or steer into a collision). Under the session's
 * checksum key (auth.ts, known only to the two ends), of each 64 MiB block prefixed with its
 * index, then of those tags in block order prefixed with the region size, in another
 * domain. Blocks are independent, so channel Workers hash them in parallel and the result
 * does not depend on how many there are.
 *
 * Two MACs from Zig's std.crypto, chosen per session by the sender (INIT, authenticated;
 * docs/PROTOCOL.md "Checksum"): AEGIS-128L-MAC (256-bit tag) when both ends run it on the
 * CPU's AES instructions (the x86-64-v3 build; the receiver says so in HELLO), else BLAKE3
 * in keyed mode (256-bit), the same speed on every CPU. One core here (bench/checksum.ts,
 * results/2026-12-02T19-38-12-checksum.jsonl): AEGIS-128L-MAC 5.8 GB/s against BLAKE3's
 * 1.8 in the v3 build; in the baseline build, where std.crypto's AES is software, 0.05
 * against BLAKE3's 1.3.
 * @module
 */
import { addressOf, keepAlive, native } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";
import { InvalidArgumentError } from "../errors.ts";
import { checkAbort, type SharedState } from "./shared_state.ts";
import { checkedPages } from "./packet.ts";

export const CHECKSUM_BLOCK_BYTES = 64 << 20;
/** Bytes of a checksum (and of each block's tag). */
export const CHECKSUM_BYTES = 32;
/** Bytes of the checksum key. */
export const CHECKSUM_KEY_BYTES = 32;

const Domain = { BLOCK: 0, REGION: 1 } as const;

/** The region checksum's MAC. */
export type ChecksumAlgorithm = "blake3" | "aegis-128l";
/** Wire ids (INIT `checksum`) and native ids (zc_region_mac). */
export const CHECKSUM_ALGORITHM_IDS: Record<ChecksumAlgorithm, number> = { blake3: 0, "aegis-128l": 1 };

/** The algorithm of wire id `id` (validated by parseInitFields). */
export function checksumAlgorithmOf(id: number): ChecksumAlgorithm {
  return id === CHECKSUM_ALGORITHM_IDS["aegis-128l"] ? "aegis-128l" : "blake3";
}

/** Validates SenderOptions.checksum (undefined: chosen per receiver at the handshake). */
export function checksumOption(checksum: ChecksumAlgorithm | undefined): ChecksumAlgorithm | undefined {
  if (checksum === undefined || Object.hasOwn(CHECKSUM_ALGORITHM_IDS, checksum)) return checksum;
  const names = Object.keys(CHECKSUM_ALGORITHM_IDS).map((name) => `"${name}"`).join(", ");
  throw new InvalidArgumentError(`checksum must be one of ${names}, got ${String(checksum)}`);
}

/** Whether this process computes AEGIS-128L-MAC on AES instructions (the native library's build). */
export function fastAegisChecksum(): boolean {
  return native.zc_hardware_aes() === 1;
}

export function blockCount(size: number): number {
  return Math.ceil(size / CHECKSUM_BLOCK_BYTES);
}

/** `sparse`: the bytes are a sparse file's from `fileOffset` on (its holes hashed as zeros, never read). */
function mac(
  algorithm: ChecksumAlgorithm,
  address: number,
  length: number,
  key: Uint8Array,
  domain: number,
  index: number,
  sparse = { fd: -1, fileOffset: 0 },
): Uint8Array {
  const out = new Uint8Array(CHECKSUM_BYTES);
  const id = CHECKSUM_ALGORITHM_IDS[algorithm];
  checkedPages(
    "region checksum",
    native.zc_region_mac(address, length, key, domain, index, out, id, sparse.fd, sparse.fileOffset),
  );
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
  algorithm: ChecksumAlgorithm,
  state: SharedState,
): Uint8Array[] {
  return blocks.map((block) => {
    checkAbort(state);
    const offset = block * CHECKSUM_BLOCK_BYTES;
    const length = Math.min(CHECKSUM_BLOCK_BYTES, region.size - offset);
    const sparse = { fd: region.sparseFd ?? -1, fileOffset: offset };
    return mac(algorithm, region.address + offset, length, key, Domain.BLOCK, block, sparse);
  });
}

/** Combines every block's tag, in block order, into the region checksum. */
export function combineBlockHashes(
  tags: readonly Uint8Array[],
  size: number,
  key: Uint8Array,
  algorithm: ChecksumAlgorithm,
): Uint8Array {
  const all = new Uint8Array(tags.length * CHECKSUM_BYTES);
  tags.forEach((tag, i) => all.set(tag, i * CHECKSUM_BYTES));
  const tag = mac(algorithm, all.length === 0 ? 0 : addressOf(all), all.length, key, Domain.REGION, size);
  keepAlive(all); // read through its address: referenced until the call has returned
  return tag;
}

/** Splits block indices round-robin among `workers`. */
export function assignBlocks(size: number, workers: number): number[][] {
  const assignment: number[][] = Array.from({ length: workers }, () => []);
  for (let block = 0; block < blockCount(size); block++) assignment[block % workers].push(block);
  return assignment;
}
