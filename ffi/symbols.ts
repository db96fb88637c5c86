/**
 * The one symbol table of the native library (zig/), in a runtime-neutral vocabulary
 * that `deno.ts` and `bun.ts` translate. Every function returns the raw kernel result:
 * a negative value is `-errno`.
 *
 * Argument kinds:
 * - `i32`, `u32`: integers.
 * - `buffer`: a typed array; the native side receives a pointer to its first byte.
 * - `address`: a native address or a 64-bit size, as a JS number (below 2^53). It crosses
 *   as a double (the Zig side checks it is a whole number: zig/sys.zig `Number`): both
 *   runtimes pass doubles on their fast call path, while a 64-bit integer parameter sends
 *   every Deno 2.9 call down its slow path, several times slower (`bench/call_overhead.ts
 *   --method ffi-pages-empty` times such a call).
 *
 * @module
 */

export type ArgKind = "i32" | "u32" | "buffer" | "address";
export type ResultKind = "i32" | "f64";

export interface SymbolSpec {
  readonly parameters: readonly ArgKind[];
  readonly result: ResultKind;
}

export const symbols = {
  // zig/socket.zig
  zc_socket: { parameters: ["u32"], result: "i32" },
  zc_bind: { parameters: ["i32", "u32", "buffer", "u32", "u32"], result: "i32" },
  zc_connect: { parameters: ["i32", "u32", "buffer", "u32", "u32"], result: "i32" },
  zc_listen: { parameters: ["i32", "u32"], result: "i32" },
  zc_accept: { parameters: ["i32"], result: "i32" },
  zc_local_port: { parameters: ["i32"], result: "i32" },
  zc_set_option: { parameters: ["i32", "u32", "i32"], result: "i32" },
  zc_get_option: { parameters: ["i32", "u32"], result: "i32" },
  zc_shutdown: { parameters: ["i32", "i32"], result: "i32" },
  zc_close: { parameters: ["i32"], result: "i32" },
  // out: BigUint64Array(3) — RLIMIT_MEMLOCK soft limit, effective capabilities, user namespace inode
  zc_locked_memory_facts: { parameters: ["buffer"], result: "i32" },
  // zig/transfer.zig
  zc_sendv: { parameters: ["i32", "buffer", "u32", "u32"], result: "i32" },
  zc_recvv: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // fd, iovecs (consumed in place), count, timeout ms, out: BigUint64Array(1) bytes moved
  zc_recv_full: { parameters: ["i32", "buffer", "u32", "i32", "buffer"], result: "i32" },
  zc_send_full: { parameters: ["i32", "buffer", "u32", "i32", "buffer"], result: "i32" },
  // fd, memory base, size, page size, wire (Uint8Array: the offsets, then the read-ahead), offsets
  // at, count, normal count, out: offsets (Float64Array), layout bits, payload bytes, populate,
  // timeout ms, read-ahead bytes, out: Float64Array(5) bytes received, bytes asked, bytes read
  // ahead, the offsets' decode result, offset bytes received
  zc_recv_wire_pages: {
    parameters: [
      "i32",
      "address",
      "address",
      "address",
      "buffer",
      "u32",
      "u32",
      "u32",
      "buffer",
      "u32",
      "address",
      "u32",
      "i32",
      "u32",
      "buffer",
    ],
    result: "i32",
  },
  // fd, memory base, size, page size, wire (Uint8Array: the first header, then each read
  // ahead, and the offsets that follow it in the socket), rule (Uint32Array(11),
  // zig/transfer.zig RunRule), out: offsets (Float64Array), populate, the sparse file's fd
  // (-1: none), timeout ms, out: Float64Array(9) (zc_recv_wire_run's outcome)
  zc_recv_wire_run: {
    parameters: ["i32", "address", "address", "address", "buffer", "buffer", "buffer", "u32", "i32", "i32", "buffer"],
    result: "i32",
  },
  // fd, memory base, size, page size, the round's pages (Uint32Array), use them (1) or the
  // memory's in order (0), page count, pages per packet, control (Int32Array over the shared
  // state), its cursor and abort words, head (Uint8Array: the header template, room for the
  // offsets), rule (Uint32Array(7), zig/transfer.zig SendRule), zero pages (0 not scanned,
  // 1 in the packet, 2 to the caller), out: zero offsets (Float64Array), its capacity,
  // populate, the sparse file's fd (-1: none), timeout ms, in/out: Float64Array(8) (zc_send_run's io)
  zc_send_run: {
    parameters: [
      "i32",
      "address",
      "address",
      "address",
      "buffer",
      "u32",
      "u32",
      "u32",
      "buffer",
      "u32",
      "u32",
      "buffer",
      "buffer",
      "u32",
      "buffer",
      "u32",
      "u32",
      "i32",
      "i32",
      "buffer",
    ],
    result: "i32",
  },
  // rule (Uint32Array(11)), the run's first header (and the one before), a header: 1 when it continues the run, 0 if not
  zc_wire_run_continues: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  // zig/errqueue.zig
  zc_drain_errqueue: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // zig/poll.zig
  zc_poll: { parameters: ["buffer", "u32", "i32"], result: "i32" },
  zc_poll_one: { parameters: ["i32", "u32", "i32"], result: "i32" },
  zc_eventfd: { parameters: [], result: "i32" },
  zc_eventfd_signal: { parameters: ["i32"], result: "i32" },
  zc_eventfd_clear: { parameters: ["i32"], result: "i32" },
  // zig/memory.zig (out parameters are 8-byte buffers: BigUint64Array(1))
  zc_map_anonymous: { parameters: ["address", "u32", "buffer"], result: "i32" },
  zc_map_file: { parameters: ["i32", "address", "u32", "buffer"], result: "i32" },
  zc_unmap: { parameters: ["address", "address"], result: "i32" },
  zc_prefault: { parameters: ["address", "address", "u32"], result: "i32" },
  zc_open_file: { parameters: ["buffer", "u32"], result: "i32" },
  zc_file_size: { parameters: ["i32", "buffer"], result: "i32" },
  zc_fs_stat: { parameters: ["i32", "buffer"], result: "i32" },
  zc_first_hole: { parameters: ["i32", "buffer"], result: "i32" },
  zc_socket_addresses: { parameters: ["i32", "buffer"], result: "i32" },
  zc_allocate_file: { parameters: ["i32", "address", "u32"], result: "i32" },
  zc_sync_file: { parameters: ["i32"], result: "i32" },
  // zig/pages.zig (offsets: Float64Array; wire: big-endian u64; ranges: (address, length) f64 pairs)
  zc_offsets_decode: { parameters: ["buffer", "u32", "u32", "address", "address", "buffer"], result: "i32" },
  zc_block_offsets_decode: { parameters: ["buffer", "u32", "u32", "address", "address", "buffer"], result: "i32" },
  zc_offsets_encode: { parameters: ["buffer", "u32", "buffer", "u32"], result: "i32" },
  zc_round_offsets: { parameters: ["buffer", "u32", "u32", "u32", "address", "buffer"], result: "i32" },
  zc_page_ranges: {
    parameters: ["address", "address", "address", "buffer", "u32", "buffer", "buffer"],
    result: "i32",
  },
  zc_split_zero_pages: {
    parameters: ["address", "address", "address", "buffer", "u32", "buffer", "buffer", "i32"],
    result: "i32",
  },
  zc_zero_pages: { parameters: ["address", "address", "address", "buffer", "u32", "u32", "i32"], result: "i32" },
  // key: 32 bytes; out: 32 bytes; algorithm 0 keyed BLAKE3, 1 AEGIS-128L-MAC (src/multifd/checksum.ts)
  zc_region_mac: {
    parameters: ["address", "address", "buffer", "u32", "address", "buffer", "u32", "i32", "address"],
    result: "i32",
  },
  zc_hardware_aes: { parameters: [], result: "i32" },
  zc_address_of: { parameters: ["buffer"], result: "f64" },
  // zig/aead.zig: cipher, key (32 bytes), first nonce, messages (iovec array), count, out / sealed
  zc_seal: { parameters: ["u32", "buffer", "address", "buffer", "u32", "address"], result: "i32" },
  zc_open: { parameters: ["u32", "buffer", "address", "address", "buffer", "u32"], result: "i32" },
  zc_hkdf_sha256: { parameters: ["buffer", "u32", "buffer", "u32", "buffer", "u32", "buffer", "u32"], result: "i32" },
} as const satisfies Record<string, SymbolSpec>;

export type Symbols = typeof symbols;

type ArgValue<K extends ArgKind> = K extends "buffer" ? ArrayBufferView : number;
type ArgValues<P extends readonly ArgKind[]> = { -readonly [I in keyof P]: ArgValue<P[I]> };

/** The loaded library: every symbol as a typed function returning a number. */
export type NativeLibrary = {
  readonly [K in keyof Symbols]: (...args: ArgValues<Symbols[K]["parameters"]>) => number;
};

/** Ids for zc_set_option / zc_get_option; mirror `Option` in zig/socket.zig. */
export const SocketOption = {
  zerocopy: 0,
  nodelay: 1,
  sendBuffer: 2,
  receiveBuffer: 3,
  keepalive: 4,
  keepaliveIdleS: 5,
  keepaliveIntervalS: 6,
  keepaliveCount: 7,
  userTimeoutMs: 8,
  lingerReset: 9,
  reuseAddress: 10,
  pendingError: 11,
  /** Value: timeout ms (-1: none). Makes recvmsg block (zig/socket.zig blockingReceive). */
  blockingReceive: 12,
} as const;

/** What a runtime loader provides. */
export interface Loaded {
  lib: NativeLibrary;
  /** Native address of a view's first byte. */
  addressOf(view: ArrayBufferView): number;
  /** A Uint8Array over native memory (not owned: valid while the memory stays mapped). */
  viewOf(address: number, length: number): Uint8Array;
}
