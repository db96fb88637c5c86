/**
 * A memory region addressed by pointer: anonymous memory, a shared file mapping, or a
 * caller's SharedArrayBuffer. Native addressing is what lets a region exceed Bun's 4 GiB
 * ArrayBuffer limit and be read by several Workers at once; JS sees it through windows.
 *
 * ```ts
 * const region = Region.allocate(8 * 2 ** 30, { hugePages: true, prefault: true });
 * region.view(0, 4096).fill(1); // a window: the first page
 * await region.close();
 * ```
 * @module
 */
import { sameBytes } from "../util/bytes.ts";
import { addressOf, Errno, native, viewOf } from "../ffi/mod.ts";
import { ChannelClosedError, InvalidArgumentError, SystemError, unbackedPagesError } from "./errors.ts";

/** How Workers find a region: plain numbers (and the SharedArrayBuffer, if any) post fine. */
export interface RegionDescriptor {
  /** Native address of byte 0 (0 for an empty region). */
  address: number;
  /** Size in bytes. */
  size: number;
  /** Keeps a SharedArrayBuffer-backed region alive in the Worker too. */
  shared?: SharedArrayBuffer;
  /**
   * A file mapping whose pages are faulted in lazily: a transfer populates each packet's
   * pages in one madvise(MADV_POPULATE_*) before its send or receive, rather than taking
   * a fault per 4 KiB page inside the copy (several times slower where faults trap).
   */
  populate?: boolean;
  /**
   * The fd of a sparse file on tmpfs (Region.createFile's `sparse`, or a file with holes
   * Region.openFile mapped), mapped from its offset 0: a page in one of its holes reads as
   * zeros already, so it is neither written (a zero page received: the file stays sparse)
   * nor read (a zero page to send, the checksum): a read through a tmpfs mapping would
   * allocate the page, or raise SIGBUS on a full file system.
   */
  sparseFd?: number;
}

/**
 * Options of {@link Region.allocate}.
 *
 * @example Large anonymous memory, ready before a transfer starts
 * ```ts
 * import { Region } from "zerocopy-multifd";
 *
 * const region = Region.allocate(8 * 2 ** 30, { hugePages: true, prefault: true });
 * // … fill it, send it with MultifdSender …
 * await region.close();
 * ```
 */
export interface AllocateOptions {
  /** madvise(MADV_HUGEPAGE): 2 MiB pages make first touches ~250x cheaper. Default false. */
  hugePages?: boolean;
  /** Fault every page in now rather than during a transfer. Default false. */
  prefault?: boolean;
}

/**
 * Options of {@link Region.createFile}.
 *
 * @example A file on tmpfs that a receive can start writing at once
 * ```ts
 * import { MultifdReceiver, Region } from "zerocopy-multifd";
 *
 * const receiver = await MultifdReceiver.listen({ port: 4444, secret: "a shared secret" });
 * await receiver.receive((size) => Region.createFile("/dev/shm/guest.img", size, { sparse: true }));
 * ```
 */
export interface CreateFileOptions {
  /**
   * On tmpfs, leave the file's pages to be allocated as they are written instead of all
   * now: reserving them (fallocate) takes ~200 ms per 2 GiB on a tmpfs of 4 KiB pages (~6 ms
   * with huge pages), which a receive would wait for before its first byte. The free space
   * is still checked now (SystemError ENOSPC if the file cannot fit), and every write this
   * module makes into the region populates its pages first (MADV_POPULATE_WRITE), so a file
   * system filled by someone else meanwhile fails the transfer with SystemError, never with
   * SIGBUS; write through {@link Region.writable} for the same (a write through
   * {@link Region.view} would raise SIGBUS then, and a read through it allocates the pages it
   * reads). A zero page a transfer receives into a hole is left there, and the checksum reads
   * holes as zeros without touching them: the file ends up holding only pages with data.
   * Elsewhere (a disk, where fallocate is fast; hugetlbfs; a kernel before 5.14) the space is
   * reserved as without it. Default false.
   */
  sparse?: boolean;
}

const MAPPING_GRANULE = 4096;
const TMPFS_MAGIC = 0x01021994n;
/** statfs f_type of file systems whose files live in memory: tmpfs, hugetlbfs. */
const IN_MEMORY_FILE_SYSTEMS: readonly bigint[] = [TMPFS_MAGIC, 0x958458f6n];

/** What statfs says of a file's file system (zc_fs_stat). */
interface FileSystem {
  type: bigint;
  blockSize: bigint;
  freeBlocks: bigint;
  /** 0: no limit. */
  totalBlocks: bigint;
}
const MAX_SIZE = Number.MAX_SAFE_INTEGER - MAPPING_GRANULE;

/**
 * Memory addressed by pointer — anonymous memory, a mapped file or a SharedArrayBuffer —
 * that multifd transfers read from and receive into, and that JS reaches through
 * {@link Region.view} windows. Not limited to Bun's 4 GiB ArrayBuffers; its
 * {@link Region.descriptor} lets Workers use the same memory.
 *
 * @example Map a file and read its first page
 * ```ts
 * import { Region } from "zerocopy-multifd";
 *
 * const region = Region.openFile("guest.img");
 * const firstPage = region.view(0, Math.min(4096, region.size));
 * console.log(region.size, firstPage[0]);
 * await region.close(); // waits for transfers still using it, then unmaps
 * ```
 */
export class Region {
  #closed = false;
  #inFlight = 0;
  #idle: (() => void)[] = [];
  /** Set when a transfer could not confirm that its threads let go: never unmap then. */
  #abandoned = false;
  /** Whether transfers populate each packet's pages first (see RegionDescriptor.populate). */
  #populate = false;
  /** A sparse file on tmpfs: its holes are zeros no one reads or writes (RegionDescriptor.sparseFd). */
  #sparse = false;

  private constructor(
    /** Native address of byte 0 (0 for an empty region). */
    readonly address: number,
    /** Size in bytes. */
    readonly size: number,
    /**
     * What backs the memory: `allocate` ("anonymous"), `openFile`/`createFile` ("file"),
     * `fromSharedArrayBuffer` ("shared-array-buffer"), `fromDescriptor` ("borrowed").
     */
    readonly kind: "anonymous" | "file" | "shared-array-buffer" | "borrowed",
    /** The mapped file's descriptor; -1 unless `kind` is "file". */
    readonly fd: number,
    /** The SharedArrayBuffer behind the region, if any. */
    readonly shared: SharedArrayBuffer | undefined,
  ) {}

  /** Anonymous zero-filled memory of `size` bytes. */
  static allocate(size: number, options: AllocateOptions = {}): Region {
    checkSize(size);
    const address = size === 0 ? 0 : map((out) => native.zc_map_anonymous(size, options.hugePages ? 1 : 0, out));
    const region = new Region(address, size, "anonymous", -1, undefined);
    if (options.prefault) region.prefault(true);
    return region;
  }

  /**
   * Maps an existing file, read-only (e.g. to send it). Its size is the file's size at
   * open time; it must not shrink while mapped. A tmpfs file with holes is sent without
   * reading them (see {@link RegionDescriptor.sparseFd}).
   */
  static openFile(path: string): Region {
    const fd = openFile(path, 0);
    try {
      const out = new BigUint64Array(1);
      check("fstat", native.zc_file_size(fd, out), path);
      const size = Number(out[0]);
      checkSize(size);
      const address = size === 0 ? 0 : map((o) => native.zc_map_file(fd, size, 0, o), path);
      const fileSystem = fileSystemOf(fd);
      const region = Region.#fileRegion(address, size, fd, fileSystem);
      // A tmpfs file with holes (a sparse output of ours, or `truncate`'s): a read of a hole
      // through the mapping would allocate it, or raise SIGBUS on a full file system, so the
      // zero-page scan and the checksum take holes as zeros without reading them.
      region.#sparse = fileSystem?.type === TMPFS_MAGIC && size > 0 && firstHole(fd) < size;
      return region;
    } catch (error) {
      native.zc_close(fd);
      throw error;
    }
  }

  /**
   * Creates `path` fresh (truncating any old content), reserves `size` bytes of disk for it
   * (a full disk fails here, never later as SIGBUS; but see {@link CreateFileOptions.sparse})
   * and maps it writable: what lands in the region lands in the file. It reads as zeros
   * until written.
   */
  static createFile(path: string, size: number, options: CreateFileOptions = {}): Region {
    checkSize(size);
    const fd = openFile(path, 1);
    let address = 0;
    try {
      const fileSystem = fileSystemOf(fd);
      let sparse = options.sparse === true && size > 0 && fileSystem?.type === TMPFS_MAGIC;
      if (sparse) checkRoom(fileSystem!, size, path);
      check(sparse ? "ftruncate" : "fallocate", native.zc_allocate_file(fd, size, sparse ? 0 : 1), path);
      if (size > 0) address = map((o) => native.zc_map_file(fd, size, 1, o), path);
      const region = Region.#fileRegion(address, size, fd, fileSystem);
      // Sparse is safe only where writes can populate first: a kernel without
      // MADV_POPULATE_WRITE (EINVAL, < 5.14) gets the space reserved after all.
      const populated = sparse ? native.zc_prefault(address, Math.min(size, MAPPING_GRANULE), 1) : 0;
      if (populated === -Errno.EINVAL) {
        check("fallocate", native.zc_allocate_file(fd, size, 1), path);
        sparse = false;
      } else {
        check("create file", populated, path);
      }
      region.#sparse = sparse;
      return region;
    } catch (error) {
      if (address !== 0) native.zc_unmap(address, size);
      native.zc_close(fd);
      throw error;
    }
  }

  /**
   * A file mapping. Files in memory (tmpfs, hugetlbfs) are populated packet by packet
   * during a transfer: there a page fault per 4 KiB page is most of the cost. Files on a
   * disk are not: the faults' readahead keeps I/O ahead of the copy, which a populate per
   * packet would serialise (measured slower: bench/RESULTS.md).
   */
  static #fileRegion(address: number, size: number, fd: number, fileSystem: FileSystem | undefined): Region {
    const region = new Region(address, size, "file", fd, undefined);
    region.#populate = fileSystem !== undefined && IN_MEMORY_FILE_SYSTEMS.includes(fileSystem.type);
    return region;
  }

  /** A region over a caller's SharedArrayBuffer (kept alive while the region is open). */
  static fromSharedArrayBuffer(shared: SharedArrayBuffer): Region {
    if (!(shared instanceof SharedArrayBuffer)) {
      throw new InvalidArgumentError("fromSharedArrayBuffer needs a SharedArrayBuffer");
    }
    const address = shared.byteLength === 0 ? 0 : addressOf(new Uint8Array(shared));
    return new Region(address, shared.byteLength, "shared-array-buffer", -1, shared);
  }

  /**
   * A region over memory described elsewhere (another Region's descriptor, possibly a
   * part of it). It does not own the memory: closing it unmaps nothing.
   */
  static fromDescriptor(descriptor: RegionDescriptor): Region {
    return new Region(descriptor.address, descriptor.size, "borrowed", -1, descriptor.shared);
  }

  /** Whether {@link close} has run; a closed region refuses views. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Plain data a Worker can use to reach this region by pointer. */
  get descriptor(): RegionDescriptor {
    this.#checkOpen();
    const descriptor: RegionDescriptor = {
      address: this.address,
      size: this.size,
      shared: this.shared,
      populate: this.#populate,
    };
    if (this.#sparse) descriptor.sparseFd = this.fd;
    return descriptor;
  }

  /**
   * A Uint8Array window onto [offset, offset + length). Valid until the region is closed;
   * keep windows ≤ 4 GiB for Bun.
   */
  view(offset: number = 0, length: number = this.size - offset): Uint8Array {
    this.#checkOpen();
    checkRange(offset, length, this.size);
    if (this.shared) return new Uint8Array(this.shared, offset, length);
    return viewOf(this.address + offset, length);
  }

  /** Copies `bytes` into the region at `offset` (through {@link writable}: SIGBUS-safe on a sparse file). */
  write(offset: number, bytes: Uint8Array): void {
    this.writable(offset, bytes.length).set(bytes);
  }

  /** Whether `other` holds the same bytes (compared window by window). */
  equals(other: Region): boolean {
    if (other.size !== this.size) return false;
    const window = 1 << 30;
    for (let offset = 0; offset < this.size; offset += window) {
      const length = Math.min(window, this.size - offset);
      if (!sameBytes(this.view(offset, length), other.view(offset, length))) return false;
    }
    return true;
  }

  /**
   * A window for writing: on a file in memory its pages are backed first
   * (MADV_POPULATE_WRITE), so a sparse file whose file system is full fails here with
   * SystemError rather than raising SIGBUS on the write.
   */
  writable(offset: number, length: number): Uint8Array {
    const window = this.view(offset, length);
    if (this.#populate && length > 0) {
      const rc = native.zc_prefault(this.address + offset, length, 1);
      if (rc < 0 && rc !== -Errno.EINVAL) throw unbackedPagesError("madvise(MADV_POPULATE_WRITE)", -rc);
    }
    return window;
  }

  /** Faults every page in now (MADV_POPULATE_WRITE/READ). */
  prefault(forWrite: boolean = true): void {
    this.#checkOpen();
    if (this.size === 0 || this.shared) return;
    check("madvise(MADV_POPULATE)", native.zc_prefault(this.address, this.size, forWrite ? 1 : 0));
  }

  /** Flushes a file region to disk (fsync). No-op for memory regions. */
  sync(): void {
    this.#checkOpen();
    if (this.fd >= 0) check("fsync", native.zc_sync_file(this.fd));
  }

  /** Marks the region as in use by a transfer; {@link close} waits for the matching release. */
  retain(): void {
    this.#checkOpen();
    this.#inFlight++;
  }

  /** Ends one {@link retain}. */
  release(): void {
    if (this.#inFlight === 0) throw new InvalidArgumentError("region released more often than retained");
    if (--this.#inFlight === 0) { for (const wake of this.#idle.splice(0)) wake(); }
  }

  /**
   * Ends one {@link retain} whose user may still touch the memory (a Worker that did not
   * confirm its exit): {@link close} will then never unmap it. A leak, rather than a crash.
   */
  abandon(): void {
    this.#abandoned = true;
    this.release();
  }

  /** Transfers using the region now (each {@link retain} not yet released). */
  get inUse(): number {
    return this.#inFlight;
  }

  /** Unmaps the region once no transfer uses it any more (sends in flight finish first). */
  async close(): Promise<void> {
    if (this.#closed) return;
    while (this.#inFlight > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
    if (this.#closed) return;
    this.#closed = true;
    if (this.#abandoned) return;
    if (this.size > 0 && (this.kind === "anonymous" || this.kind === "file")) native.zc_unmap(this.address, this.size);
    if (this.fd >= 0) native.zc_close(this.fd);
  }

  #checkOpen(): void {
    if (this.#closed) throw new ChannelClosedError("region is closed");
  }
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_SIZE) {
    throw new InvalidArgumentError(`region size must be a non-negative safe integer, got ${size}`);
  }
}

function checkRange(offset: number, length: number, size: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size
  ) {
    throw new InvalidArgumentError(`range [${offset}, +${length}) is outside the region of ${size} bytes`);
  }
}

/** The file system of `fd` (undefined when statfs fails: then treated as a disk's). */
function fileSystemOf(fd: number): FileSystem | undefined {
  const out = new BigUint64Array(4);
  if (native.zc_fs_stat(fd, out) < 0) return undefined;
  return { type: out[0], blockSize: out[1], freeBlocks: out[2], totalBlocks: out[3] };
}

/** Where the file's first hole starts (its size when it has none; Infinity when lseek fails). */
function firstHole(fd: number): number {
  const out = new BigUint64Array(1);
  return native.zc_first_hole(fd, out) < 0 ? Infinity : Number(out[0]);
}

/** A file of `size` bytes fits in the free space (a file system without a limit: always). */
function checkRoom({ blockSize, freeBlocks, totalBlocks }: FileSystem, size: number, path: string): void {
  const free = freeBlocks * blockSize;
  if (totalBlocks > 0n && free < BigInt(size)) {
    throw new SystemError("create file", Errno.ENOSPC, `${path}: ${free} bytes free, ${size} needed`);
  }
}

function check(operation: string, rc: number, detail = ""): void {
  if (rc < 0) throw new SystemError(operation, -rc, detail);
}

function map(call: (out: BigUint64Array) => number, detail = ""): number {
  const out = new BigUint64Array(1);
  check("mmap", call(out), detail);
  return Number(out[0]);
}

function openFile(path: string, mode: 0 | 1): number {
  if (typeof path !== "string" || path.length === 0 || path.includes("\0")) {
    throw new InvalidArgumentError(`file path must be a non-empty string without NUL, got ${String(path)}`);
  }
  const fd = native.zc_open_file(new TextEncoder().encode(path + "\0"), mode);
  if (fd < 0) throw new SystemError("open", -fd, path);
  return fd;
}
