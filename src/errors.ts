/**
 * Every error this module throws. Each is a class so callers can branch with
 * `instanceof`; those caused by a syscall carry the errno and its name.
 * @module
 */
import { errnoName } from "../ffi/mod.ts";

/** Base class of all errors thrown by zerocopy-multifd. */
export class ZeroCopyMultifdError extends Error {
  override name = "ZeroCopyMultifdError";
}

/** Bad input from the caller: wrong type, out-of-range value, malformed address. */
export class InvalidArgumentError extends ZeroCopyMultifdError {
  override name = "InvalidArgumentError";
}

/** A system call failed. `code` is the errno name, e.g. "ENOSPC". */
export class SystemError extends ZeroCopyMultifdError {
  override name = "SystemError";
  readonly code: string;
  constructor(readonly operation: string, readonly errno: number, detail = "") {
    super(`${operation} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ""}`);
    this.code = errnoName(errno);
  }
}

/** A socket system call failed, e.g. with ECONNRESET or EPIPE. */
export class SocketError extends SystemError {
  override name = "SocketError";
}

/** The channel was closed or aborted locally; no further I/O is possible on it. */
export class ChannelClosedError extends ZeroCopyMultifdError {
  override name = "ChannelClosedError";
}

/** A wait for the socket exceeded its configured limit. */
export class TimeoutError extends ZeroCopyMultifdError {
  override name = "TimeoutError";
  constructor(readonly operation: string, readonly timeoutMs: number, detail = "") {
    super(`${operation} made no progress for ${timeoutMs} ms${detail ? ` (${detail})` : ""}`);
  }
}

/**
 * A zero-copy write on a channel that cannot do zero-copy: it was not opened with
 * `zerocopy: true`, or the kernel refused SO_ZEROCOPY. Never a silent fallback.
 */
export class ZeroCopyUnsupportedError extends ZeroCopyMultifdError {
  override name = "ZeroCopyUnsupportedError";
}

/**
 * MSG_ZEROCOPY sends keep failing with ENOBUFS although no completion is pending: the
 * socket's option-memory limit (`net.core.optmem_max`) or the locked-memory limit
 * (`RLIMIT_MEMLOCK`, for users without CAP_IPC_LOCK) is too small.
 */
export class ZeroCopyResourceError extends ZeroCopyMultifdError {
  override name = "ZeroCopyResourceError";
  readonly code = "ENOBUFS";
}

/** The kernel reported an error on the socket's error queue instead of a completion. */
export class ZeroCopyCompletionError extends ZeroCopyMultifdError {
  override name = "ZeroCopyCompletionError";
  readonly code: string;
  constructor(readonly errno: number, readonly origin: number) {
    super(`error queue reported ${errnoName(errno)} (origin ${origin})`);
    this.code = errnoName(errno);
  }
}

/** Completion ids from the kernel do not match the sends made: a bug, never ignored. */
export class ZeroCopyAccountingError extends ZeroCopyMultifdError {
  override name = "ZeroCopyAccountingError";
}
