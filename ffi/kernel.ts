/**
 * The few Linux x86-64 ABI numbers the TypeScript side needs: errno values (the native
 * library returns `-errno`) and poll(2) event bits.
 * @module
 */

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EEXIST: 17,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  EFBIG: 27,
  ENOSPC: 28,
  EPIPE: 32,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  ENOPROTOOPT: 92,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENETRESET: 102,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
} as const;

const ERRNO_NAMES = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** "ECONNRESET" for 104; "errno 200" for numbers this table does not know. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

export const Poll = {
  IN: 0x001,
  OUT: 0x004,
  ERR: 0x008,
  HUP: 0x010,
  NVAL: 0x020,
  RDHUP: 0x2000,
} as const;

/** Most iovecs one sendmsg/recvmsg accepts (UIO_MAXIOV). */
export const IOV_MAX = 1024;

/** ee_code bit: the kernel fell back to copying for this zero-copy range. */
export const ZEROCOPY_COPIED = 1;
/** ee_origin of a zero-copy completion (SO_EE_ORIGIN_ZEROCOPY). */
export const ORIGIN_ZEROCOPY = 5;

/** shutdown(2) `how`. */
export const Shutdown = { READ: 0, WRITE: 1, BOTH: 2 } as const;
