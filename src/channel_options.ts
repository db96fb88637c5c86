/**
 * The options of a `SocketChannel` (and so of listeners, connections and every
 * multifd channel): what each means, its default and its bounds, checked and resolved in
 * one place.
 * @module
 */
import { native, SocketOption } from "../ffi/mod.ts";
import { InvalidArgumentError } from "./errors.ts";
import { lockedMemoryBudget, MIN_ZEROCOPY_BUDGET_BYTES } from "./locked_memory.ts";
import { integerOption, MAX_TIMEOUT_MS, timeoutMs } from "./options.ts";

/** Default limit for one wait on a blocked read or write (ms). */
export const DEFAULT_IO_TIMEOUT_MS = 60_000;
/** Default time a zero-copy flush may go without any completion arriving (ms). */
export const DEFAULT_FLUSH_TIMEOUT_MS = 10_000;

/**
 * How a {@link SocketChannel} behaves: zero-copy, timeouts, dead-peer detection and
 * socket buffer limits. Taken by `connect`, `listen` (for accepted channels) and the
 * `SocketChannel` constructor; every value is checked before a socket is touched.
 *
 * @example A zero-copy channel for a link where a stall should fail fast
 * ```ts
 * import { type ChannelOptions, connect } from "zerocopy-multifd";
 *
 * const options: ChannelOptions = {
 *   zerocopy: true,
 *   ioTimeoutMs: 5_000, // a blocked read or write fails after 5 s without progress
 *   flushTimeoutMs: 5_000,
 *   userTimeoutMs: 10_000, // the kernel drops a link whose data stays unacknowledged 10 s
 * };
 * const channel = await connect({ hostname: "10.0.0.2", port: 4444, ...options });
 * ```
 */
export interface ChannelOptions {
  /** Ask for zero-copy sends (SO_ZEROCOPY). Default false. */
  zerocopy?: boolean;
  /**
   * Longest wait for a blocked read or write to make progress, in ms (-1: no limit). A
   * multifd receive channel, which waits inside recvmsg, reports a stall after one to two
   * times this.
   */
  ioTimeoutMs?: number;
  /** Longest a flush may wait without any completion arriving, in ms (-1: no limit). */
  flushTimeoutMs?: number;
  /**
   * TCP_USER_TIMEOUT: the kernel drops the connection (ETIMEDOUT) when sent data stays
   * unacknowledged this long, so a silently dead link is noticed. 0 = kernel default.
   */
  userTimeoutMs?: number;
  /** TCP keepalive probing an idle connection: first probe after this many seconds (0 = off). */
  keepaliveIdleS?: number;
  /**
   * SO_SNDBUF: caps the socket's send queue (the kernel doubles the value and clamps it
   * to net.core.wmem_max). Default: the kernel's autotuning. Only for same-host peers
   * (loopback, veth): there a zero-copy send is copied when it is delivered, by whichever
   * thread transmits it, and a short queue keeps that copy on the sending side instead of
   * the receiver's. Over a network, a cap below the bandwidth-delay product slows every send.
   */
  sendBufferBytes?: number;
  /**
   * Most bytes this channel's outstanding zero-copy sends may have charged to locked
   * memory at once (the kernel charges each MSG_ZEROCOPY sendmsg `(length >> 12) + 2`
   * pages against RLIMIT_MEMLOCK until its completion, unless the process has
   * CAP_IPC_LOCK). Before a send that would exceed it, the channel waits for completions;
   * a longer write goes out in several sends. -1: no limit. Default:
   * {@link lockedMemoryBudget} (-1 for root), at least MIN_ZEROCOPY_BUDGET_BYTES. Give
   * channels that send at the same time a share each.
   */
  zerocopyBudgetBytes?: number;
}

/** Bounds of `sendBufferBytes`. */
export const SEND_BUFFER_BYTES = { min: 4096, max: 1 << 30 } as const;

/**
 * The multifd sender's send buffer when its receiver is on this host (unless given): with
 * a long send queue, the segments queued are delivered — and, zero-copy, copied — by the
 * receiver's thread; 256 KiB keeps that work with the sender (bench/RESULTS.md, run C).
 */
export const SAME_HOST_SEND_BUFFER_BYTES = 256 * 1024;

/** Default TCP_USER_TIMEOUT (ms). */
export const DEFAULT_USER_TIMEOUT_MS = 30_000;
/** Default idle time before TCP keepalive probes (s); then 3 probes 5 s apart. */
export const DEFAULT_KEEPALIVE_IDLE_S = 15;
const KEEPALIVE_INTERVAL_S = 5;
const KEEPALIVE_PROBES = 3;

/**
 * {@link ChannelOptions} with every value checked and every default applied, in one
 * place for channels, listeners, and the multifd sender and receiver. `zerocopyBudgetBytes`
 * is left undefined when not given: its default (this process's locked-memory budget)
 * only matters to a channel that does zero-copy.
 */
export interface ResolvedChannelOptions {
  zerocopy: boolean;
  ioTimeoutMs: number;
  flushTimeoutMs: number;
  userTimeoutMs: number;
  keepaliveIdleS: number;
  sendBufferBytes: number | undefined;
  zerocopyBudgetBytes: number | undefined;
}

/** Checks every channel option (InvalidArgumentError naming the first bad one) and applies the defaults. */
export function resolveChannelOptions(options: ChannelOptions): ResolvedChannelOptions {
  if (typeof options !== "object" || options === null) throw new InvalidArgumentError("options must be an object");
  return {
    zerocopy: options.zerocopy === true,
    ioTimeoutMs: timeoutMs("ioTimeoutMs", options.ioTimeoutMs, DEFAULT_IO_TIMEOUT_MS),
    flushTimeoutMs: timeoutMs("flushTimeoutMs", options.flushTimeoutMs, DEFAULT_FLUSH_TIMEOUT_MS),
    userTimeoutMs: integerOption("userTimeoutMs", options.userTimeoutMs, DEFAULT_USER_TIMEOUT_MS, 0, MAX_TIMEOUT_MS),
    keepaliveIdleS: integerOption("keepaliveIdleS", options.keepaliveIdleS, DEFAULT_KEEPALIVE_IDLE_S, 0, 32767),
    sendBufferBytes: options.sendBufferBytes === undefined
      ? undefined
      : integerOption("sendBufferBytes", options.sendBufferBytes, 0, SEND_BUFFER_BYTES.min, SEND_BUFFER_BYTES.max),
    zerocopyBudgetBytes: zerocopyBudgetOption(options),
  };
}

/** Throws InvalidArgumentError for options the SocketChannel constructor would refuse. */
export function checkChannelOptions(options: ChannelOptions): void {
  resolveChannelOptions(options);
}

function zerocopyBudgetOption(options: ChannelOptions): number | undefined {
  const bytes = options.zerocopyBudgetBytes;
  if (bytes === undefined || bytes === -1) return bytes;
  if (!Number.isSafeInteger(bytes) || bytes < MIN_ZEROCOPY_BUDGET_BYTES) {
    throw new InvalidArgumentError(
      `zerocopyBudgetBytes must be -1 (no limit) or an integer of at least ${MIN_ZEROCOPY_BUDGET_BYTES} ` +
        `(bytes of locked memory), got ${bytes}`,
    );
  }
  return bytes;
}

/** The budget of a zero-copy channel: the option, or this process's share of RLIMIT_MEMLOCK. */
export function zerocopyBudget(explicit: number | undefined): number {
  if (explicit !== undefined) return explicit;
  const budget = lockedMemoryBudget();
  return budget < 0 ? -1 : Math.max(MIN_ZEROCOPY_BUDGET_BYTES, budget);
}

/** Sets TCP_USER_TIMEOUT and keepalive on `fd`, so that a silently dead peer is noticed. */
export function configureDeadPeerDetection(fd: number, userTimeoutMs: number, keepaliveIdleS: number): void {
  if (userTimeoutMs > 0) native.zc_set_option(fd, SocketOption.userTimeoutMs, userTimeoutMs);
  if (keepaliveIdleS > 0) {
    native.zc_set_option(fd, SocketOption.keepalive, 1);
    native.zc_set_option(fd, SocketOption.keepaliveIdleS, keepaliveIdleS);
    native.zc_set_option(fd, SocketOption.keepaliveIntervalS, KEEPALIVE_INTERVAL_S);
    native.zc_set_option(fd, SocketOption.keepaliveCount, KEEPALIVE_PROBES);
  }
}
