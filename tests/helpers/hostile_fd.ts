/**
 * File-descriptor reuse probes: after a transfer fails, the numbers of the fds it closed
 * are handed out again to the next files this process opens. These helpers take such a
 * number on purpose (as a listening socket) so a test can check that the failed transfer
 * does not act on it any more (shutdown, close).
 */
import { readdirSync, readlinkSync } from "node:fs";
import { connect } from "../../mod.ts";
import { native } from "../../ffi/mod.ts";

/** Socket fds this process has open now. */
export function socketFds(): Set<number> {
  const fds = new Set<number>();
  for (const name of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`).startsWith("socket:")) fds.add(Number(name));
    } catch {
      // closed while listing
    }
  }
  return fds;
}

/**
 * Blocks this thread (as a busy application would) until one of `before` is closed — by
 * another thread, e.g. a channel Worker — and returns it; -1 after `limitMs`.
 */
export function waitForClose(before: Set<number>, limitMs: number): number {
  const until = Date.now() + limitMs;
  while (Date.now() < until) {
    const now = socketFds();
    for (const fd of before) if (!now.has(fd)) return fd;
  }
  return -1;
}

export interface Probe {
  fd: number;
  port: number;
  /** Whether the probe still accepts connections (it was neither shut down nor closed). */
  listening(): Promise<boolean>;
  /** Whether the fd still refers to the probe's socket. */
  open(): boolean;
  close(): void;
}

/**
 * Opens sockets until the kernel hands out fd number `wanted` (the lowest free one wins,
 * so it comes within a few tries), makes that one a loopback listener and closes the rest.
 * Synchronous: nothing else in this thread can take the number first.
 */
export function takeFdAsListener(wanted: number): Probe {
  const spare: number[] = [];
  let fd = native.zc_socket(4);
  while (fd >= 0 && fd !== wanted && spare.length < 4096) spare.push(fd), (fd = native.zc_socket(4));
  for (const s of spare) native.zc_close(s);
  if (fd !== wanted) {
    if (fd >= 0) native.zc_close(fd);
    throw new Error(`could not take fd ${wanted}`);
  }
  const loopback = new Uint8Array([127, 0, 0, 1]);
  if (native.zc_bind(fd, 4, loopback, 0, 0) < 0 || native.zc_listen(fd, 16) < 0) {
    native.zc_close(fd);
    throw new Error("bind/listen failed");
  }
  const port = native.zc_local_port(fd);
  const identity = readlinkSync(`/proc/self/fd/${fd}`); // "socket:[inode]"
  let closed = false;
  return {
    fd,
    port,
    async listening() {
      try {
        const channel = await connect({ hostname: "127.0.0.1", port, connectTimeoutMs: 2_000 });
        channel.close();
        return true;
      } catch {
        return false;
      }
    },
    open() {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === identity;
      } catch {
        return false;
      }
    },
    close() {
      if (!closed && this.open()) native.zc_close(fd);
      closed = true;
    },
  };
}
