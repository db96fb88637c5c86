/**
 * What one transfer holds, on either side, from its start to its end — a hold on the
 * region, the channel fds (owned by the main thread; Workers only use them), the shared
 * state and the channel Workers — and the one way to give it all back: exactly once, and
 * only after every Worker has left its native calls, whether the transfer ended normally,
 * failed, or was aborted (even while it was ending).
 * @module
 */
import { native, Shutdown } from "../../ffi/mod.ts";
import { ChannelClosedError } from "../errors.ts";
import type { Region } from "../region.ts";
import { abortSocket } from "../socket_channel.ts";
import { assignBlocks, type ChecksumAlgorithm, combineBlockHashes } from "./checksum.ts";
import { Control, counterIndex, createSharedState, readCounters, type SharedState } from "./shared_state.ts";
import { round3, type TransferStats, transferStats } from "./stats.ts";
import type { Cipher } from "./aead.ts";
import { WorkerPool } from "./worker_pool.ts";

/**
 * How long teardown waits for the channel Workers to confirm they exited. Every blocking
 * call of theirs is woken by an abort (sockets shut down, barrier released, the abort flag
 * checked between checksum blocks), so this is only reached by a Worker stuck in the
 * kernel (e.g. a page fault on a hung disk).
 */
export const WORKER_EXIT_GRACE_MS = 5_000;

// deno-lint-ignore no-explicit-any
type AnyPool = WorkerPool<any, any>;

export class Transfer {
  readonly state: SharedState;
  #fds: number[] = [];
  /** The regions held (one for the module's own transfers; one per RAM block for QEMU's). */
  #regions: Region[] = [];
  #pool: AnyPool | undefined;
  /** Settles once the Workers of {@link startPool} are adopted or failed to start. */
  #poolStarted: Promise<void> = Promise.resolve();
  #failure: Error | undefined;
  #closing: Promise<void> | undefined;
  /** Rounds completed, each ended by a sync. */
  rounds = 0;
  #setupSeconds = 0;
  #started = 0;
  #transferSeconds = 0;

  /** The cipher of encrypted channels, or "none". */
  readonly encryption: Cipher | "none";

  constructor(channels: number, encryption: Cipher | "none") {
    this.state = createSharedState(channels);
    this.encryption = encryption;
  }

  /** The error that ended the transfer, if one did. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Whether teardown has begun: nothing more may be handed to this transfer. */
  get ending(): boolean {
    return this.#closing !== undefined;
  }

  get fds(): readonly number[] {
    return this.#fds;
  }

  /**
   * The data phase begins (the first round; Workers started): what came since
   * `setupFrom` (connect or listen, a performance.now() time) counts as set-up.
   */
  startClock(setupFrom: number): void {
    if (this.#started) return;
    this.#started = performance.now();
    this.#setupSeconds = (this.#started - setupFrom) / 1000;
  }

  /** The data moved so far has all arrived (a sync, or the end of stream). */
  stopClock(): void {
    this.#transferSeconds = (performance.now() - this.#started) / 1000;
  }

  /** Payload bytes moved so far, every channel (cheap enough for a progress bar). */
  get bytes(): number {
    let total = 0;
    for (let id = 0; id < this.state.channels; id++) total += this.state.counters[counterIndex(id, "bytes")];
    return total;
  }

  /** Counters so far, the same shape on both sides. */
  stats(zerocopy: boolean): TransferStats {
    const seconds = this.#transferSeconds || (this.#started ? (performance.now() - this.#started) / 1000 : 0);
    const stats = transferStats(
      readCounters(this.state, this.state.channels),
      seconds,
      this.rounds,
      zerocopy,
      this.encryption,
    );
    return { ...stats, setupSeconds: round3(this.#setupSeconds) };
  }

  /**
   * The region checksum (checksum.ts), hashed by the channel Workers in parallel: the
   * last phase before the end of stream, on both sides.
   */
  async checksum(
    size: number,
    key: Uint8Array,
    algorithm: ChecksumAlgorithm,
  ): Promise<{ checksum: Uint8Array; seconds: number }> {
    const pool = this.#pool!;
    const started = performance.now();
    assignBlocks(size, pool.size).forEach((blocks, id) => pool.post(id, { kind: "checksum", blocks, key, algorithm }));
    const hashes: Uint8Array[] = [];
    for (const reply of await pool.all("hashes")) {
      (reply.blocks as number[]).forEach((block, i) => (hashes[block] = (reply.hashes as Uint8Array[])[i]));
    }
    return {
      checksum: combineBlockHashes(hashes, size, key, algorithm),
      seconds: round3((performance.now() - started) / 1000),
    };
  }

  /** Holds `region` (its `close()` waits) until the transfer is torn down. */
  holdRegion(region: Region): void {
    this.#throwIfEnding();
    region.retain();
    this.#regions.push(region);
  }

  /**
   * The peer's stream has said that no more data comes (every channel's last packet was read
   * at the final sync): shuts the reading side of every channel down, so that a Worker
   * waiting for a next packet sees the end at once instead of when the peer closes its
   * sockets, which a QEMU source does only in its clean-up, milliseconds after it reported
   * the migration completed. What a peer had still queued is read first, as ever.
   */
  endReads(): void {
    for (const fd of this.#fds) native.zc_shutdown(fd, Shutdown.READ);
  }

  /** Takes ownership of the channels' fds; if the transfer has already ended they are closed now. */
  adoptFds(fds: number[]): void {
    if (this.#closing) {
      for (const fd of fds) native.zc_close(fd);
      this.#throwIfEnding();
    }
    this.#fds = fds;
  }

  /**
   * Starts the channel Workers while the caller goes on (connects, reads a stream), and
   * adopts them once ready; a failing Worker aborts the transfer. Teardown waits for them,
   * so none outlives the transfer however early it ends.
   */
  startPool<In, Out extends { kind: string }>(count: number): Promise<WorkerPool<In, Out>> {
    const starting = WorkerPool.start<In, Out>(
      new URL("./channel_worker.ts", import.meta.url),
      count,
      (error) => void this.abort(error),
    ).then((pool) => (this.adoptPool(pool), pool));
    this.#poolStarted = starting.then(() => {}, () => {});
    return starting;
  }

  /** Takes the channel Workers; if the transfer has already ended they are stopped now. */
  adoptPool(pool: AnyPool): void {
    if (this.#closing) {
      void pool.shutdown(0);
      this.#throwIfEnding();
    }
    this.#pool = pool;
  }

  /**
   * Ends the transfer with `error` (the first one wins; after a normal end has begun, a
   * no-op): raises the abort flag, releases the sync barrier, shuts every socket down so
   * blocked Workers return, and fails every pending call. Resolves once torn down.
   */
  abort(error: Error): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#failure = error;
    Atomics.store(this.state.control, Control.ABORT, 1);
    Atomics.add(this.state.control, Control.BARRIER, 1);
    Atomics.notify(this.state.control, Control.BARRIER);
    // This thread owns every fd until teardown closes it, so no number can have been
    // reused by another file yet: shutting them down reaches only our sockets.
    for (const fd of this.#fds) abortSocket(fd);
    this.#pool?.fail(error);
    return this.close();
  }

  /** Tears the transfer down, once: Workers exit, then fds are closed and the region released. */
  close(): Promise<void> {
    return (this.#closing ??= this.#teardown());
  }

  async #teardown(): Promise<void> {
    await this.#poolStarted; // a pool still starting is stopped as it is adopted
    const stuck = (await this.#pool?.shutdown(WORKER_EXIT_GRACE_MS)) ?? [];
    if (stuck.length > 0) {
      // A Worker that never confirmed may still be inside a native call on an fd or the
      // region: leaking both is safe, closing or unmapping them under it is not.
      for (const region of this.#regions) region.abandon();
    } else {
      for (const fd of this.#fds) native.zc_close(fd);
      for (const region of this.#regions) region.release();
    }
    this.#fds = [];
    this.#regions = [];
  }

  #throwIfEnding(): void {
    if (this.#closing) throw this.#failure ?? new ChannelClosedError("the transfer has ended");
  }
}
