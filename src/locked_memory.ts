/**
 * How much memory MSG_ZEROCOPY may keep pinned in this process.
 *
 * The kernel charges every zero-copy `sendmsg` to the sending user's locked memory
 * (`RLIMIT_MEMLOCK`) for its whole requested length — `(length >> 12) + 2` pages, the
 * worst case of pages it may pin — from the call until that send's completion, unless
 * the process has CAP_IPC_LOCK (root has it) in the initial user namespace or the limit
 * is infinite. The count is per user, so every process of the user shares the limit
 * (8 MiB by default on many distributions). A send that would exceed it fails with
 * ENOBUFS. Channels therefore keep their outstanding charge under a budget
 * (`zerocopyBudgetBytes`), by default {@link lockedMemoryBudget}.
 * @module
 */
import { native } from "../ffi/mod.ts";
import { SystemError } from "./errors.ts";

/** Page size the kernel counts pinned pages in (x86-64). */
const PAGE_BYTES = 4096;
/** Pages the kernel adds to every zero-copy send's charge (a range that straddles pages). */
const EXTRA_PAGES = 2;
const CAP_IPC_LOCK = 14;
/** Inode of the initial user namespace (PROC_USER_INIT_INO, include/linux/proc_ns.h). */
const INITIAL_USER_NAMESPACE_INODE = 0xeffffffd;
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/**
 * Share of `RLIMIT_MEMLOCK` one process's zero-copy sends use by default: half, because
 * the limit is per user and shared with every other process of that user (and with
 * other users of pinned memory, e.g. io_uring registered buffers).
 */
export const LOCKED_MEMORY_BUDGET_SHARE = 0.5;

/** Smallest `zerocopyBudgetBytes`: one sendmsg of 2 pages (its charge is 4 pages). */
export const MIN_ZEROCOPY_BUDGET_BYTES = 16 * 1024;

/** What the kernel's zero-copy charge depends on, for this process. */
export interface LockedMemoryFacts {
  /** RLIMIT_MEMLOCK soft limit in bytes; -1: unlimited. */
  limitBytes: number;
  /** CAP_IPC_LOCK is in the effective capability set. */
  capIpcLock: boolean;
  /** The process is in the initial user namespace (or /proc does not tell). */
  initialUserNamespace: boolean;
  /** Zero-copy sends are not charged at all: CAP_IPC_LOCK counts only in the initial namespace. */
  exempt: boolean;
}

/** Reads the RLIMIT_MEMLOCK soft limit, the effective capabilities and the user namespace. */
export function lockedMemoryFacts(): LockedMemoryFacts {
  const out = new BigUint64Array(3);
  const rc = native.zc_locked_memory_facts(out);
  if (rc < 0) throw new SystemError("getrlimit(RLIMIT_MEMLOCK)/capget", -rc);
  const [limit, capabilities, namespaceInode] = out;
  const capIpcLock = ((capabilities >> BigInt(CAP_IPC_LOCK)) & 1n) === 1n;
  // The kernel checks the capability against the initial user namespace (capable()).
  const initialUserNamespace = namespaceInode === 0n || namespaceInode === BigInt(INITIAL_USER_NAMESPACE_INODE);
  return {
    limitBytes: limit === RLIM_INFINITY ? -1 : Number(limit),
    capIpcLock,
    initialUserNamespace,
    exempt: capIpcLock && initialUserNamespace,
  };
}

/**
 * Bytes this process's zero-copy sends may keep charged to locked memory at once: -1 (no
 * limit) with CAP_IPC_LOCK in the initial user namespace or an infinite RLIMIT_MEMLOCK;
 * otherwise {@link LOCKED_MEMORY_BUDGET_SHARE} of the soft limit, in whole pages. This is
 * the default `zerocopyBudgetBytes` of a channel; split it between channels that send at
 * the same time (the multifd sender gives each of its N channels 1/N). Also -1 when the
 * limits cannot be read (a sandbox refusing capget): ENOBUFS is then still drained and
 * retried, as without a budget.
 */
export function lockedMemoryBudget(): number {
  let facts: LockedMemoryFacts;
  try {
    facts = lockedMemoryFacts();
  } catch {
    return -1;
  }
  if (facts.exempt || facts.limitBytes < 0) return -1;
  return Math.floor((facts.limitBytes * LOCKED_MEMORY_BUDGET_SHARE) / PAGE_BYTES) * PAGE_BYTES;
}

/** Bytes the kernel charges to locked memory for one zero-copy sendmsg of `length` bytes. */
export function zerocopyCharge(length: number): number {
  return (Math.floor(length / PAGE_BYTES) + EXTRA_PAGES) * PAGE_BYTES;
}

/** The longest zero-copy sendmsg whose charge fits in `budget` bytes (≥ MIN_ZEROCOPY_BUDGET_BYTES). */
export function longestZerocopySend(budget: number): number {
  return (Math.floor(budget / PAGE_BYTES) - EXTRA_PAGES) * PAGE_BYTES;
}
