/**
 * Every error this module throws. Each is a class so callers can branch with
 * `instanceof`; those caused by a syscall carry the errno and its name.
 * @module
 */
// kernel.ts only: ffi/library_path.ts builds on these errors, so nothing that loads the library.
import { errnoName } from "../ffi/kernel.ts";

/**
 * Base class of all errors thrown by zerocopy-multifd.
 *
 * @example Tell this module's failures from others
 * ```ts
 * import { connect, SocketError, TimeoutError, ZeroCopyMultifdError } from "zerocopy-multifd";
 *
 * try {
 *   const channel = await connect({ hostname: "10.0.0.2", port: 4444, connectTimeoutMs: 2_000 });
 *   channel.close();
 * } catch (error) {
 *   if (error instanceof TimeoutError) console.error("no answer within", error.timeoutMs, "ms");
 *   else if (error instanceof SocketError) console.error("refused:", error.code); // e.g. "ECONNREFUSED"
 *   else if (!(error instanceof ZeroCopyMultifdError)) throw error;
 * }
 * ```
 */
export class ZeroCopyMultifdError extends Error {
  /** Always "ZeroCopyMultifdError", so errors stay recognisable in logs and across Workers. */
  override name = "ZeroCopyMultifdError";
}

/** Bad input from the caller: wrong type, out-of-range value, malformed address. */
export class InvalidArgumentError extends ZeroCopyMultifdError {
  /** Always "InvalidArgumentError", so errors stay recognisable in logs and across Workers. */
  override name = "InvalidArgumentError";
}

/** A system call failed. `code` is the errno name, e.g. "ENOSPC". */
export class SystemError extends ZeroCopyMultifdError {
  /** Always "SystemError", so errors stay recognisable in logs and across Workers. */
  override name = "SystemError";
  /** The errno's name, e.g. "ENOSPC" ("errno <n>" for one this module does not name). */
  readonly code: string;
  /**
   * `operation`: the failed call, e.g. "connect"; `errno`: the positive errno value;
   * `detail`: context for the message, e.g. the address or path.
   */
  constructor(readonly operation: string, readonly errno: number, detail: string = "") {
    super(`${operation} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ""}`);
    this.code = errnoName(errno);
  }
}

/**
 * @internal A write into a region's memory that the kernel could not back (EFAULT where a
 * touch would raise SIGBUS, or ENOMEM): a page of a sparse file (Region.createFile's
 * `sparse`) that its full file system cannot give.
 */
export function unbackedPagesError(operation: string, errno: number): SystemError {
  return new SystemError(
    operation,
    errno,
    "a page of the destination could not be allocated: is its file system full?",
  );
}

/** A socket system call failed, e.g. with ECONNRESET or EPIPE. */
export class SocketError extends SystemError {
  /** Always "SocketError", so errors stay recognisable in logs and across Workers. */
  override name = "SocketError";
}

/** The channel was closed or aborted locally; no further I/O is possible on it. */
export class ChannelClosedError extends ZeroCopyMultifdError {
  /** Always "ChannelClosedError", so errors stay recognisable in logs and across Workers. */
  override name = "ChannelClosedError";
}

/** A wait for the socket exceeded its configured limit. */
export class TimeoutError extends ZeroCopyMultifdError {
  /** Always "TimeoutError", so errors stay recognisable in logs and across Workers. */
  override name = "TimeoutError";
  /**
   * `operation`: what waited, e.g. "connect" or "accept"; `timeoutMs`: the limit it
   * exceeded; `detail`: context for the message, e.g. the address.
   */
  constructor(readonly operation: string, readonly timeoutMs: number, detail: string = "") {
    super(`${operation} made no progress for ${timeoutMs} ms${detail ? ` (${detail})` : ""}`);
  }
}

/**
 * A zero-copy write on a channel that cannot do zero-copy: it was not opened with
 * `zerocopy: true`, or the kernel refused SO_ZEROCOPY. Never a silent fallback.
 */
export class ZeroCopyUnsupportedError extends ZeroCopyMultifdError {
  /** Always "ZeroCopyUnsupportedError", so errors stay recognisable in logs and across Workers. */
  override name = "ZeroCopyUnsupportedError";
}

/**
 * MSG_ZEROCOPY sends keep failing with ENOBUFS although no completion is pending: the
 * socket's option-memory limit (`net.core.optmem_max`) or the locked-memory limit
 * (`RLIMIT_MEMLOCK`, for users without CAP_IPC_LOCK) is too small.
 */
export class ZeroCopyResourceError extends ZeroCopyMultifdError {
  /** Always "ZeroCopyResourceError", so errors stay recognisable in logs and across Workers. */
  override name = "ZeroCopyResourceError";
  /** The errno the sends kept failing with. */
  readonly code = "ENOBUFS";
}

/** The kernel reported an error on the socket's error queue instead of a completion. */
export class ZeroCopyCompletionError extends ZeroCopyMultifdError {
  /** Always "ZeroCopyCompletionError", so errors stay recognisable in logs and across Workers. */
  override name = "ZeroCopyCompletionError";
  /** The reported errno's name, e.g. "ECONNRESET". */
  readonly code: string;
  /**
   * `errno`: the error queue record's errno; `origin`: its `ee_origin` (SO_EE_ORIGIN_*),
   * which says what produced the record.
   */
  constructor(readonly errno: number, readonly origin: number) {
    super(`error queue reported ${errnoName(errno)} (origin ${origin})`);
    this.code = errnoName(errno);
  }
}

/** Completion ids from the kernel do not match the sends made: a bug, never ignored. */
export class ZeroCopyAccountingError extends ZeroCopyMultifdError {
  /** Always "ZeroCopyAccountingError", so errors stay recognisable in logs and across Workers. */
  override name = "ZeroCopyAccountingError";
}

/** A multifd transfer was aborted: by `abort()` on either side, by its signal, or because a channel failed. */
export class TransferAbortedError extends ZeroCopyMultifdError {
  /** Always "TransferAbortedError", so errors stay recognisable in logs and across Workers. */
  override name = "TransferAbortedError";
}

/** The error of a transfer that an option's `signal` aborted, with the signal's reason. */
export function abortedBySignal(signal: AbortSignal | undefined): TransferAbortedError {
  return new TransferAbortedError(`aborted by the signal: ${String(signal?.reason)}`);
}

/**
 * The peer could not prove that it knows the shared secret: a receiver whose INIT_ACK
 * carries no valid MAC (a wrong secret, an impostor, a replay of an earlier session:
 * nothing of the region was sent to it), a RESULT or VERDICT whose MAC does not verify,
 * or, on an encrypted channel, a record that fails to open (altered, dropped, repeated,
 * reordered or moved on the way).
 */
export class AuthenticationError extends ZeroCopyMultifdError {
  /** Always "AuthenticationError", so errors stay recognisable in logs and across Workers. */
  override name = "AuthenticationError";
}

/**
 * An encrypted channel reached the most messages one key schedule may seal (2^48, far
 * beyond any transfer): it stops rather than reuse a nonce.
 */
export class EncryptionLimitError extends ZeroCopyMultifdError {
  /** Always "EncryptionLimitError", so errors stay recognisable in logs and across Workers. */
  override name = "EncryptionLimitError";
}
