/**
 * A TCP channel with QEMU QIOChannel zero-copy semantics (`writev` with and without
 * MSG_ZEROCOPY, `flushZerocopy`), over a socket this module owns natively.
 *
 * Every operation is written once, as a generator that yields whenever it must wait for
 * the socket; `…Sync` variants wait with a blocking poll(2) (for Workers), the async ones
 * through the {@link Reactor} so the event loop never blocks.
 *
 * ```ts
 * import { connect } from "zerocopy-multifd";
 * const channel = await connect({ hostname: "127.0.0.1", port: 9000, zerocopy: true });
 * await channel.writevZerocopy([page1, page2]); // page1/page2 must stay unmodified…
 * const allCopied = await channel.flushZerocopy(); // …until this resolves
 * channel.close();
 * ```
 * @module
 */
import { Errno, native, ORIGIN_ZEROCOPY, Poll, Shutdown, SocketOption, ZEROCOPY_COPIED } from "../ffi/mod.ts";
import {
  ChannelClosedError,
  InvalidArgumentError,
  SocketError,
  TimeoutError,
  unbackedPagesError,
  ZeroCopyCompletionError,
  ZeroCopyResourceError,
  ZeroCopyUnsupportedError,
} from "./errors.ts";
import { IovecArray } from "./iovec.ts";
import {
  type ChannelOptions,
  configureDeadPeerDetection,
  resolveChannelOptions,
  zerocopyBudget,
} from "./channel_options.ts";
import { longestZerocopySend, zerocopyCharge } from "./locked_memory.ts";
import { FdWaits } from "./reactor.ts";
import { ZeroCopyCompletions } from "./zerocopy_completions.ts";

/** Counters of one channel, like QEMU's per-socket zero-copy accounting. */
export interface ChannelStats {
  /** Bytes written, with and without zero-copy. */
  bytesWritten: number;
  /** Bytes read. */
  bytesRead: number;
  /** Successful MSG_ZEROCOPY sendmsg calls. */
  zerocopySends: number;
  /** Sends whose completion arrived. */
  zerocopyCompletions: number;
  /** Completed sends the kernel had to copy after all (always all of them on loopback). */
  zerocopyCopied: number;
  /** Flushes that waited for completions. */
  zerocopyFlushes: number;
  /** Flushes at which every completion was copied (QEMU: dirty-sync-missed-zero-copy). */
  zerocopyFlushesAllCopied: number;
  /** ENOBUFS answers to zero-copy sends that were drained and retried. */
  zerocopyNoBufferRetries: number;
  /** Waits for completions before a zero-copy send, to stay within `zerocopyBudgetBytes`. */
  zerocopyBudgetWaits: number;
}

/** What an operation needs before it can go on. */
interface Wait {
  events: number;
  timeoutMs: number;
  operation: string;
}
type Operation<T> = Generator<Wait, T, number>;

const RECORDS_PER_DRAIN = 64;
/**
 * @internal The native whole reads' and writes' results besides -errno (zig/transfer.zig
 * `Full`): zc_recv_full, zc_send_full, and the packet reads of wire_reads.ts.
 */
export const FullResult = { done: 0, timedOut: 1, invalidOffset: 2, payloadMismatch: 3, stopped: 4 } as const;

const AF_INET = 2;
const FAILURE_EVENTS = Poll.ERR | Poll.HUP | Poll.NVAL;

/**
 * A connected TCP socket with QEMU QIOChannel zero-copy semantics: `writev` copies,
 * `writevZerocopy` sends straight from the caller's buffers (never silently falling back
 * to copying), and `flushZerocopy` waits for the kernel's completions. Every operation
 * has a blocking `…Sync` twin for Workers. Made by {@link connect} and
 * {@link Listener.accept}, or adopted from an fd with `new SocketChannel(fd, options)`.
 *
 * @example Send a buffer without copying it into the kernel
 * ```ts
 * import { connect } from "zerocopy-multifd";
 *
 * const channel = await connect({ hostname: "10.0.0.2", port: 9000, zerocopy: true });
 * const data = new Uint8Array(16 << 20).fill(1);
 * await channel.writevZerocopy([data]); // do not modify `data`…
 * const allCopied = await channel.flushZerocopy(); // …until this resolves
 * console.log(allCopied, channel.stats.zerocopySends);
 * channel.close();
 * ```
 */
export class SocketChannel {
  /** Whether `writevZerocopy` can be used: asked for, and SO_ZEROCOPY accepted by the kernel. */
  readonly zerocopy: boolean;
  readonly #zerocopyRefusal: string | undefined;
  readonly #ioTimeoutMs: number;
  readonly #flushTimeoutMs: number;
  readonly #completions = new ZeroCopyCompletions();
  readonly #writeIov = new IovecArray();
  readonly #readIov = new IovecArray();
  readonly #records = new Uint32Array(RECORDS_PER_DRAIN * 4);
  readonly #fd: number;
  /**
   * Bytes moved by the last zc_recv_full / zc_send_full: the u64 the native call writes, read
   * as its two 32-bit halves (little-endian), so that no BigInt is made per call.
   */
  readonly #moved = new Uint32Array(new ArrayBuffer(8)); // its own (8-byte aligned) backing store
  readonly #waits: FdWaits;
  #closed = false;
  #writeTail: Promise<unknown> = Promise.resolve();
  #readTail: Promise<unknown> = Promise.resolve();
  #writing = false;
  #reading = false;
  /** An error-queue error found while a read drained completions, for the next writer. */
  #deferredError: Error | undefined;
  #bytesWritten = 0;
  #bytesRead = 0;
  #flushes = 0;
  #flushesAllCopied = 0;
  #noBufferRetries = 0;
  #budgetWaits = 0;
  /** Locked-memory budget of outstanding zero-copy sends (-1: none), and the longest send it allows. */
  readonly #zerocopyBudget: number;
  readonly #longestZerocopySend: number;

  /**
   * Takes ownership of a connected socket fd (e.g. one handed to a Worker). With
   * `zerocopy: true`, SO_ZEROCOPY is enabled here; if the kernel refuses, the channel
   * works but `writevZerocopy` throws ZeroCopyUnsupportedError.
   */
  constructor(fd: number, options: ChannelOptions = {}) {
    if (!Number.isInteger(fd) || fd < 0) throw new InvalidArgumentError(`fd must be a non-negative integer, got ${fd}`);
    this.#fd = fd;
    this.#waits = new FdWaits(fd);
    const resolved = resolveChannelOptions(options);
    this.#ioTimeoutMs = resolved.ioTimeoutMs;
    this.#flushTimeoutMs = resolved.flushTimeoutMs;
    if (resolved.zerocopy) {
      const rc = native.zc_set_option(fd, SocketOption.zerocopy, 1);
      this.#zerocopyRefusal = rc < 0 ? new SocketError("setsockopt(SO_ZEROCOPY)", -rc).message : undefined;
    } else {
      this.#zerocopyRefusal = "the channel was opened without zerocopy: true";
    }
    this.zerocopy = this.#zerocopyRefusal === undefined;
    this.#zerocopyBudget = this.zerocopy ? zerocopyBudget(resolved.zerocopyBudgetBytes) : -1;
    this.#longestZerocopySend = this.#zerocopyBudget < 0 ? Infinity : longestZerocopySend(this.#zerocopyBudget);
    // Headers and small packets must not wait for Nagle (as QEMU's migration sockets).
    native.zc_set_option(fd, SocketOption.nodelay, 1);
    configureDeadPeerDetection(fd, resolved.userTimeoutMs, resolved.keepaliveIdleS);
    if (resolved.sendBufferBytes !== undefined) {
      const rc = native.zc_set_option(fd, SocketOption.sendBuffer, resolved.sendBufferBytes);
      if (rc < 0) throw new SocketError("setsockopt(SO_SNDBUF)", -rc);
    }
  }

  /** The socket's file descriptor (-1 once closed or detached). */
  get fd(): number {
    return this.#closed ? -1 : this.#fd;
  }

  /** Whether the channel was closed, detached or relinquished: no further I/O is possible. */
  get closed(): boolean {
    return this.#closed;
  }

  /** A snapshot of the channel's counters. */
  get stats(): ChannelStats {
    const c = this.#completions;
    return {
      bytesWritten: this.#bytesWritten,
      bytesRead: this.#bytesRead,
      zerocopySends: c.sends,
      zerocopyCompletions: c.completions,
      zerocopyCopied: c.copied,
      zerocopyFlushes: this.#flushes,
      zerocopyFlushesAllCopied: this.#flushesAllCopied,
      zerocopyNoBufferRetries: this.#noBufferRetries,
      zerocopyBudgetWaits: this.#budgetWaits,
    };
  }

  /**
   * Whether the peer is this host: the connection's local and peer IP addresses are the
   * same (loopback, or a connection to one of this host's own addresses). False across
   * network namespaces (veth) and hosts.
   */
  get peerOnThisHost(): boolean {
    const bytes = new Uint8Array(64);
    if (this.#closed || native.zc_socket_addresses(this.#fd, bytes) < 0) return false;
    const family = bytes[0] | (bytes[1] << 8);
    // sockaddr_in: the address at 4..8; sockaddr_in6: at 8..24.
    const [from, to] = family === AF_INET ? [4, 8] : [8, 24];
    for (let i = from; i < to; i++) if (bytes[i] !== bytes[32 + i]) return false;
    return family === (bytes[32] | (bytes[33] << 8));
  }

  /** Zero-copy sends whose completion has not arrived yet. */
  get zerocopyPending(): number {
    return this.#completions.outstanding;
  }

  /** The channel's `zerocopyBudgetBytes` in effect (-1: no limit, or no zero-copy). */
  get zerocopyBudgetBytes(): number {
    return this.#zerocopyBudget;
  }

  /** Bytes the pending zero-copy sends are charged to locked memory, as the kernel counts. */
  get zerocopyPinnedBytes(): number {
    return this.#completions.pinnedBytes;
  }

  /**
   * Writes every byte of `bufs`, in order (partial writes, EINTR and EAGAIN handled).
   * Resolves with the number of bytes written.
   */
  async writev(bufs: readonly Uint8Array[]): Promise<number> {
    return await this.#runAsync("write", this.#write(checkViews(bufs), false));
  }

  /** {@link writev}, blocking the calling thread (for Workers). */
  writevSync(bufs: readonly Uint8Array[]): number {
    checkViews(bufs);
    if (this.#quietErrorQueue) return this.#moveFullSync("write", () => this.#writeIov.load(bufs));
    return this.#runSync("write", this.#write(bufs, false));
  }

  /**
   * Writes every byte of `bufs` with MSG_ZEROCOPY: the kernel sends straight from these
   * buffers, after this call returns.
   *
   * **Buffer rule:** do not modify the buffers until {@link flushZerocopy} has resolved
   * (modifications may or may not be sent). You may drop your references: the channel
   * keeps the buffers alive until the kernel reports their completion.
   *
   * Throws ZeroCopyUnsupportedError when the channel cannot do zero-copy (never falls
   * back to copying), ZeroCopyResourceError when ENOBUFS persists with nothing left to
   * drain (optmem or locked-memory limit).
   */
  async writevZerocopy(bufs: readonly Uint8Array[]): Promise<number> {
    return await this.#runAsync("write", this.#writeZerocopy(checkViews(bufs)));
  }

  /** {@link writevZerocopy}, blocking the calling thread (for Workers). */
  writevZerocopySync(bufs: readonly Uint8Array[]): number {
    return this.#runSync("write", this.#writeZerocopy(checkViews(bufs)));
  }

  /**
   * Writes native memory ranges (address, length pairs) the caller keeps alive and
   * unmodified itself, e.g. a mapped region, with or without MSG_ZEROCOPY. For Workers.
   */
  writeRangesSync(addresses: readonly number[], lengths: readonly number[], zerocopy: boolean): number {
    if (zerocopy) this.#requireZerocopy();
    const load = () => this.#writeIov.loadRanges(addresses, lengths);
    if (!zerocopy && this.#quietErrorQueue) return this.#moveFullSync("write", load);
    return this.#runSync("write", this.#send(zerocopy, load));
  }

  /**
   * Waits until every zero-copy send so far has completed, for as long as completions
   * keep arriving (`flushTimeoutMs` without any is an error).
   *
   * Returns 1 when at least one send completed since the previous flush and the kernel
   * copied every one of them (zero-copy did not happen, as always on loopback), 0
   * otherwise, and 0 at once on a channel without zero-copy. Throws on any error the
   * error queue reports, on a lost connection, and on timeout.
   */
  flushZerocopy(): Promise<0 | 1> {
    return this.#runAsync("write", this.#flush());
  }

  /** {@link flushZerocopy}, blocking the calling thread (for Workers). */
  flushZerocopySync(): 0 | 1 {
    return this.#runSync("write", this.#flush());
  }

  /**
   * @internal Blocks until the first `count` zero-copy sends of this channel have
   * completed (`stats.zerocopySends` taken after a send is its mark): the memory they were
   * made from may then be reused, e.g. a staging slot. Errors and limits as {@link flushZerocopySync}.
   */
  awaitZerocopySendsSync(count: number): void {
    this.#runSync("write", this.#awaitSends(count));
  }

  /**
   * Fills `buf` from the socket. Resolves with `buf.length`, or fewer bytes only when
   * the peer ended the stream (EOF).
   */
  readFull(buf: Uint8Array): Promise<number> {
    return this.#runAsync("read", this.#read(() => this.#readIov.load([checkView(buf)])));
  }

  /**
   * Reads what has arrived into `buf`, waiting for at least one byte (QIOChannel's
   * `qio_channel_read`). Resolves with the number of bytes read, 0 at EOF.
   */
  read(buf: Uint8Array): Promise<number> {
    return this.#runAsync("read", this.#read(() => this.#readIov.load([checkView(buf)]), true));
  }

  /** {@link readFull}, blocking the calling thread (for Workers). */
  readFullSync(buf: Uint8Array): number {
    const load = () => this.#readIov.load([checkView(buf)]);
    if (this.#quietErrorQueue) return this.#moveFullSync("read", load);
    return this.#runSync("read", this.#read(load));
  }

  /** Fills native memory ranges (address, length pairs) the caller owns; see readFull. */
  readRangesSync(addresses: readonly number[], lengths: readonly number[]): number {
    const load = () => this.#readIov.loadRanges(addresses, lengths);
    if (this.#quietErrorQueue) return this.#moveFullSync("read", load);
    return this.#runSync("read", this.#read(load));
  }

  /**
   * @internal Runs `read` — one native call that receives on `fd` by itself, blocking up to
   * `ioTimeoutMs` per wait (the packet reads of wire_reads.ts) — as this channel's read: one
   * at a time, only while no zero-copy send is outstanding (nothing on the error queue may
   * raise POLLERR in the native wait). `read` reports what it moved with {@link countRead}.
   * `operation` names the caller in the error thrown otherwise.
   */
  nativeReadSync<T>(operation: string, read: (fd: number, ioTimeoutMs: number) => T): T {
    return this.#nativeSync("read", operation, read);
  }

  /**
   * @internal Counts `bytes` read by a {@link nativeReadSync} call whose result is `rc` (a
   * {@link FullResult} or -errno) and throws its failure: TimeoutError (`total - bytes`
   * missing) or SocketError. Returns `bytes`.
   */
  countRead(rc: number, bytes: number, total: number): number {
    return this.#fullResult("read", rc, bytes, total);
  }

  /**
   * @internal {@link nativeReadSync} for a native call that sends on `fd` by itself (the
   * packet sends of wire_writes.ts), as this channel's write; it reports what it wrote with
   * {@link countWrite}.
   */
  nativeWriteSync<T>(operation: string, write: (fd: number, ioTimeoutMs: number) => T): T {
    return this.#nativeSync("write", operation, write);
  }

  /** @internal {@link countRead} for a {@link nativeWriteSync} call (`total - bytes` unsent). */
  countWrite(rc: number, bytes: number, total: number): number {
    return this.#fullResult("write", rc, bytes, total);
  }

  #nativeSync<T>(side: "read" | "write", operation: string, call: (fd: number, ioTimeoutMs: number) => T): T {
    if (!this.#quietErrorQueue) {
      throw new InvalidArgumentError(`${operation}: flush this channel's zero-copy sends first`);
    }
    this.#begin(side);
    try {
      if (side === "write") this.#throwDeferred();
      return call(this.#fd, this.#ioTimeoutMs);
    } finally {
      this.#end(side);
    }
  }

  /**
   * Shuts the connection down in both directions. Operations blocked on it, in this
   * thread or another, fail promptly; the fd stays open until {@link close}.
   */
  abort(): void {
    if (!this.#closed) native.zc_shutdown(this.#fd, Shutdown.BOTH);
  }

  /**
   * Closes the socket. With zero-copy sends still unflushed the connection is reset
   * instead (SO_LINGER 0), so the kernel drops the queued pages: flush first when the
   * data must arrive. The buffers of those sends stay referenced until close(2) itself,
   * which waits for operations still waiting on the socket (woken by a shutdown).
   */
  close(): void {
    if (this.#closed) return;
    if (this.#completions.outstanding > 0) native.zc_set_option(this.#fd, SocketOption.lingerReset, 1);
    this.#closed = true;
    this.#waits.close(() => this.#completions.releaseAll());
  }

  /**
   * Gives up ownership of the fd without closing it (to hand it to a Worker) and
   * returns it. Only when idle, and only before the channel's first zero-copy send: the
   * kernel numbers zero-copy sends per socket, and a new owner's count would restart at
   * 0 (hand the fd over first and send zero-copy in the new channel).
   */
  detach(): number {
    if (this.#closed) throw new ChannelClosedError("channel is closed");
    if (this.#writing || this.#reading || this.#waits.waiting || this.#completions.outstanding > 0) {
      throw new InvalidArgumentError("cannot detach a channel with operations or zero-copy sends in flight");
    }
    if (this.#completions.sends > 0) {
      throw new InvalidArgumentError(
        `cannot detach a channel that has made zero-copy sends (${this.#completions.sends}): the kernel numbers ` +
          "them per socket and a new channel on the fd would count from 0; detach before the first zero-copy send",
      );
    }
    this.#closed = true;
    this.#waits.release();
    return this.#fd;
  }

  /**
   * @internal For a thread that reads this socket only with the …Sync methods (a multifd
   * receive Worker): recvmsg itself blocks, up to `ioTimeoutMs` per call, so that a whole
   * read waits in the kernel (MSG_WAITALL), as QEMU's receive threads do, instead of a
   * poll(2) and a recvmsg per wake-up. Writes and async reads stay non-blocking (their
   * calls pass MSG_DONTWAIT). A stall is then reported after one to two `ioTimeoutMs`.
   */
  blockInReceive(): void {
    if (this.#closed) throw new ChannelClosedError("channel is closed");
    const rc = native.zc_set_option(this.#fd, SocketOption.blockingReceive, this.#ioTimeoutMs);
    if (rc < 0) throw new SocketError("setsockopt(SO_RCVTIMEO)", -rc);
  }

  /**
   * @internal For a channel whose fd another thread owns and closes (a multifd channel
   * Worker): stops using the fd without closing it, whatever is in flight. With zero-copy
   * sends unflushed it sets SO_LINGER 0 first, so that the owner's close resets the
   * connection. Buffers held for those sends can be read by the kernel until that close,
   * which this thread cannot observe: they stay referenced as long as this thread lives
   * (a bounded leak; multifd Workers send native region ranges, which hold none).
   */
  relinquish(): void {
    if (this.#closed) return;
    if (this.#completions.outstanding > 0) native.zc_set_option(this.#fd, SocketOption.lingerReset, 1);
    this.#closed = true;
    this.#waits.release();
    this.#completions.abandon();
  }

  /** Closes the channel at the end of a `using` block, as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  // --- operations (one implementation each, driven sync or async) ---

  *#write(bufs: readonly Uint8Array[], zerocopy: boolean): Operation<number> {
    return yield* this.#send(zerocopy, () => this.#writeIov.load(bufs));
  }

  *#writeZerocopy(bufs: readonly Uint8Array[]): Operation<number> {
    this.#requireZerocopy();
    try {
      return yield* this.#write(bufs, true);
    } finally {
      // Even a failed write may have queued sends that still read these buffers.
      this.#completions.hold(bufs.slice());
    }
  }

  /** `load` fills the shared iovec array only once this operation runs (not while queued). */
  *#send(zerocopy: boolean, load: () => IovecArray): Operation<number> {
    this.#throwDeferred();
    const iov = load();
    const total = iov.remaining;
    const completions = this.#completions;
    while (iov.remaining > 0) {
      let length = Infinity;
      let charge = 0;
      if (zerocopy) {
        // The kernel charges the whole requested length (an upper bound when IOV_MAX cuts it).
        length = Math.min(iov.remaining, this.#longestZerocopySend);
        charge = zerocopyCharge(length);
        const budget = this.#zerocopyBudget;
        if (budget >= 0 && completions.outstanding > 0 && completions.pinnedBytes + charge > budget) {
          this.#budgetWaits++;
          if (this.#drain() === 0) yield* this.#awaitCompletion("write (zero-copy budget)");
          continue;
        }
      }
      const { words, count } = iov.pending(length);
      const rc = native.zc_sendv(this.#fd, words, count, zerocopy ? 1 : 0);
      if (rc > 0) {
        iov.advance(rc);
        this.#bytesWritten += rc;
        if (zerocopy) completions.recordSend(charge);
        continue;
      }
      const errno = -rc;
      if (errno === Errno.EINTR) continue;
      // A refused zero-copy send may have extended the newest send's notification first:
      // its charge then stays until that send completes.
      if (zerocopy && errno === Errno.EAGAIN) completions.chargeNewest(charge);
      if (errno === Errno.EAGAIN) {
        const revents = yield { events: Poll.OUT, timeoutMs: this.#ioTimeoutMs, operation: "write" };
        if (revents === 0) throw new TimeoutError("write", this.#ioTimeoutMs, `${iov.remaining} bytes unsent`);
        if (revents & Poll.ERR && this.zerocopy) this.#drain();
        continue;
      }
      if (errno === Errno.ENOBUFS && zerocopy) {
        this.#noBufferRetries++;
        if (this.#drain() > 0) continue;
        if (this.#completions.outstanding === 0) {
          throw new ZeroCopyResourceError(
            "MSG_ZEROCOPY send failed with ENOBUFS and no completion is pending: raise net.core.optmem_max " +
              "(option memory for notifications) or RLIMIT_MEMLOCK (locked memory, for users without CAP_IPC_LOCK)",
          );
        }
        yield* this.#awaitCompletion("write (ENOBUFS)");
        continue;
      }
      throw new SocketError("sendmsg", errno, `${total - iov.remaining} of ${total} bytes written`);
    }
    return total;
  }

  *#flush(): Operation<0 | 1> {
    if (!this.zerocopy) return 0;
    yield* this.#awaitSends(this.#completions.sends, "flushZerocopy");
    const result = this.#completions.endEpoch();
    this.#flushes++;
    this.#flushesAllCopied += result;
    return result;
  }

  /** Waits until the first `count` zero-copy sends have completed (every id below the oldest incomplete one). */
  *#awaitSends(count: number, operation = "zero-copy staging"): Operation<void> {
    this.#throwDeferred();
    const completions = this.#completions;
    while (completions.sends - completions.outstanding < count) {
      if (this.#drain() > 0) continue;
      yield* this.#awaitCompletion(operation);
    }
  }

  /** Waits for the error queue to become readable; fails if the connection is gone. */
  *#awaitCompletion(operation: string): Operation<void> {
    const revents = yield { events: 0, timeoutMs: this.#flushTimeoutMs, operation };
    const outstanding = `${this.#completions.outstanding} zero-copy sends outstanding`;
    if (revents === 0) throw new TimeoutError(operation, this.#flushTimeoutMs, outstanding);
    if (revents & FAILURE_EVENTS && this.#drain() === 0) {
      const socketError = native.zc_get_option(this.#fd, SocketOption.pendingError);
      if (socketError > 0) throw new SocketError(operation, socketError, outstanding);
      if (revents & (Poll.HUP | Poll.NVAL)) {
        throw new ChannelClosedError(`${operation}: connection closed, ${outstanding}`);
      }
    }
  }

  /** `some`: return after the first bytes arrived, not only when every range is full. */
  *#read(load: () => IovecArray, some = false): Operation<number> {
    const iov = load();
    const total = iov.remaining;
    while (iov.remaining > 0) {
      const { words, count } = iov.pending();
      const rc = native.zc_recvv(this.#fd, words, count);
      if (rc > 0) {
        iov.advance(rc);
        this.#bytesRead += rc;
        if (some) break;
        continue;
      }
      if (rc === 0) break;
      const errno = -rc;
      if (errno === Errno.EINTR) continue;
      if (errno !== Errno.EAGAIN) throw new SocketError("recvmsg", errno);
      const revents = yield { events: Poll.IN, timeoutMs: this.#ioTimeoutMs, operation: "read" };
      if (revents === 0) throw new TimeoutError("read", this.#ioTimeoutMs, `${iov.remaining} bytes missing`);
      // Pending completions keep POLLERR raised: take them, or the next poll would spin.
      if (revents & Poll.ERR && this.zerocopy) {
        try {
          this.#drain();
        } catch (error) {
          this.#deferredError ??= error as Error;
        }
      }
    }
    return total - iov.remaining;
  }

  /** Applies every queued completion; returns how many records were read. */
  #drain(): number {
    let total = 0;
    for (;;) {
      const n = native.zc_drain_errqueue(this.#fd, this.#records, RECORDS_PER_DRAIN);
      if (n < 0) throw new SocketError("recvmsg(MSG_ERRQUEUE)", -n);
      for (let i = 0; i < n; i++) {
        const [lo, hi, code, errno] = this.#records.subarray(i * 4, i * 4 + 4);
        const origin = code >>> 8;
        if (origin !== ORIGIN_ZEROCOPY || errno !== 0) throw new ZeroCopyCompletionError(errno, origin);
        this.#completions.complete(lo, hi, (code & ZEROCOPY_COPIED) !== 0);
      }
      total += n;
      if (n < RECORDS_PER_DRAIN) return total;
    }
  }

  #requireZerocopy(): void {
    if (!this.zerocopy) {
      throw new ZeroCopyUnsupportedError(`zero-copy write not possible: ${this.#zerocopyRefusal}`);
    }
  }

  #throwDeferred(): void {
    const error = this.#deferredError;
    if (error) {
      this.#deferredError = undefined;
      throw error;
    }
  }

  // --- drivers ---

  #begin(side: "write" | "read"): void {
    if (this.#closed) throw new ChannelClosedError("channel is closed");
    if (side === "write" ? this.#writing : this.#reading) {
      throw new InvalidArgumentError(`a synchronous ${side} cannot run while another ${side} is in progress`);
    }
    if (side === "write") this.#writing = true;
    else this.#reading = true;
  }

  #end(side: "write" | "read"): void {
    if (side === "write") this.#writing = false;
    else this.#reading = false;
    (side === "write" ? this.#writeIov : this.#readIov).release();
  }

  /** No zero-copy send outstanding: nothing on the error queue can raise POLLERR (see #moveFullSync). */
  get #quietErrorQueue(): boolean {
    return this.#completions.outstanding === 0;
  }

  /**
   * A whole blocking read (every byte, or up to EOF) or write as one native call that waits
   * in poll(2) itself (zc_recv_full / zc_send_full): a channel Worker's hot path, with no JS
   * per syscall. Only while no zero-copy send is outstanding, so nothing on the error queue
   * raises POLLERR (the JS loop drains it: #read, #send). Errors as that loop's.
   */
  #moveFullSync(side: "write" | "read", load: () => IovecArray): number {
    this.#begin(side);
    try {
      if (side === "write") this.#throwDeferred();
      const iov = load();
      const total = iov.remaining;
      const moved = this.#moved;
      const rc = side === "read"
        ? native.zc_recv_full(this.#fd, iov.words, iov.count, this.#ioTimeoutMs, moved)
        : native.zc_send_full(this.#fd, iov.words, iov.count, this.#ioTimeoutMs, moved);
      return this.#fullResult(side, rc, moved[0] + moved[1] * 0x1_0000_0000, total);
    } finally {
      this.#end(side);
    }
  }

  /** Counts what a whole read or write moved and turns its failure into the error to throw. */
  #fullResult(side: "write" | "read", rc: number, bytes: number, total: number): number {
    if (side === "read") this.#bytesRead += bytes;
    else this.#bytesWritten += bytes;
    if (rc === FullResult.timedOut) {
      throw new TimeoutError(
        side,
        this.#ioTimeoutMs,
        `${total - bytes} bytes ${side === "read" ? "missing" : "unsent"}`,
      );
    }
    // EFAULT, ENOMEM: a page the data was to land in could not be backed (a sparse file's full file system).
    if ((rc === -Errno.EFAULT || rc === -Errno.ENOMEM) && side === "read") throw unbackedPagesError("recvmsg", -rc);
    if (rc < 0 && side === "read") throw new SocketError("recvmsg", -rc);
    if (rc < 0) throw new SocketError("sendmsg", -rc, `${bytes} of ${total} bytes written`);
    return bytes;
  }

  #runSync<T>(side: "write" | "read", operation: Operation<T>): T {
    this.#begin(side);
    try {
      let step = operation.next();
      while (!step.done) {
        const { events, timeoutMs } = step.value;
        let revents = native.zc_poll_one(this.#fd, events, timeoutMs);
        if (revents === -Errno.EINTR) revents = events | Poll.IN; // retry the syscall
        else if (revents < 0) throw new SocketError("poll", -revents);
        this.#checkOpen();
        step = operation.next(revents);
      }
      return step.value;
    } finally {
      operation.return(undefined as T); // runs the operation's own cleanup if it was cut short
      this.#end(side);
    }
  }

  /** Async operations on one side run one after another, in call order. */
  #runAsync<T>(side: "write" | "read", operation: Operation<T>): Promise<T> {
    const previous = side === "write" ? this.#writeTail : this.#readTail;
    const run = previous.then(async () => {
      this.#begin(side);
      try {
        let step = operation.next();
        while (!step.done) {
          const { events, timeoutMs } = step.value;
          const revents = await this.#waits.wait(events, timeoutMs);
          this.#checkOpen();
          step = operation.next(revents);
        }
        return step.value;
      } finally {
        operation.return(undefined as T); // runs the operation's own cleanup if it was cut short
        this.#end(side);
      }
    });
    const settled = run.catch(() => {});
    if (side === "write") this.#writeTail = settled;
    else this.#readTail = settled;
    return run;
  }

  #checkOpen(): void {
    if (this.#closed) throw new ChannelClosedError("channel was closed during the operation");
  }
}

/**
 * Shuts a socket down in both directions by fd, from any thread: a Worker blocked on it
 * in a `…Sync` call returns promptly with an error or EOF. The fd stays open.
 */
export function abortSocket(fd: number): void {
  native.zc_shutdown(fd, Shutdown.BOTH);
}

function checkView(view: Uint8Array): Uint8Array {
  if (!(view instanceof Uint8Array)) {
    throw new InvalidArgumentError(`expected a Uint8Array, got ${Object.prototype.toString.call(view)}`);
  }
  return view;
}

function checkViews(bufs: readonly Uint8Array[]): readonly Uint8Array[] {
  if (!Array.isArray(bufs)) throw new InvalidArgumentError("expected an array of Uint8Array");
  for (const view of bufs) checkView(view);
  return bufs;
}
