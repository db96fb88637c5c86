/** Running a multifd transfer inside the test process, both ends on loopback. */
import {
  MultifdReceiver,
  MultifdSender,
  type ReceiverOptions,
  type ReceiverResult,
  Region,
  type SenderOptions,
  type SenderResult,
} from "../../mod.ts";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { patternBytes } from "./pattern.ts";

export const SECRET = "test-secret-0123456789abcdef";

/** Fills a region with deterministic pseudo-random bytes (window by window). */
export function fillPattern(region: Region, seed: number): void {
  const window = 64 << 20;
  for (let offset = 0; offset < region.size; offset += window) {
    const length = Math.min(window, region.size - offset);
    region.write(offset, patternBytes(length, seed + offset / window));
  }
}

export interface TransferPlan {
  /** Rounds after the first full one: each a list of pages, changed in the source before it is sent. */
  rounds?: number[][];
  sender?: Partial<SenderOptions>;
  receiver?: Partial<ReceiverOptions>;
  /** Where to receive; default: fresh anonymous memory of the source's size. */
  destination?: Region;
}

/** Sends `source` to a fresh region of the same size; returns both results and the destination. */
export async function transfer(source: Region, plan: TransferPlan = {}): Promise<{
  sent: SenderResult;
  received: ReceiverResult;
  destination: Region;
  sender: MultifdSender;
}> {
  const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 20_000, ...plan.receiver });
  const destination = plan.destination ?? Region.allocate(source.size);
  const receiving = receiver.receive(destination);
  receiving.catch(() => {});
  let sender: MultifdSender | undefined;
  try {
    sender = await MultifdSender.connect(source, {
      hostname: plan.receiver?.hostname ?? "127.0.0.1",
      port: receiver.port,
      secret: SECRET,
      ioTimeoutMs: 20_000,
      ...plan.sender,
    });
    await sender.sendRound();
    let round = 1;
    for (const pages of plan.rounds ?? []) {
      for (const page of pages) {
        source.write(page * 4096, patternBytes(Math.min(4096, source.size - page * 4096), 1000 + round));
      }
      await sender.sendRound(pages);
      round++;
    }
    const sent = await sender.finish();
    const received = await receiving;
    return { sent, received, destination, sender };
  } catch (error) {
    await sender?.abort(); // releases the source, so that the caller can close it
    await receiver.abort();
    if (!plan.destination) await destination.close();
    throw error;
  }
}

/**
 * TCP sockets this process has open (fds whose socket inode is in /proc/net/tcp{,6}).
 * Only TCP sockets are counted: the runtimes open and close internal fds of their own.
 */
export function openTcpSockets(): number {
  const tcpInodes = new Set<string>();
  for (const table of ["/proc/self/net/tcp", "/proc/self/net/tcp6"]) {
    for (const line of readFileSync(table, "utf8").split("\n").slice(1)) {
      const inode = line.trim().split(/\s+/)[9];
      if (inode && inode !== "0") tcpInodes.add(inode);
    }
  }
  let count = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (match && tcpInodes.has(match[1])) count++;
    } catch {
      // closed while listing
    }
  }
  return count;
}
