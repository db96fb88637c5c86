/**
 * migrate.ts qemu-recv and qemu-send: the destination of a real QEMU's multifd migration
 * (RAM blocks to files), and what it received migrated into a real QEMU destination.
 * @module
 */
import {
  ChannelFailedError,
  MAX_QEMU_CHANNELS,
  QemuMigrationReceiver,
  QemuMigrationSender,
  type QemuReceiveResult,
  type QemuSendResult,
  SocketError,
  TimeoutError,
} from "../../mod.ts";
import { formatBytes, formatHostPort, type HostPort, oneLine, parseHostPort, parseSize } from "../cli_util.ts";
import { err, out } from "../../util/output.ts";
import {
  Failure,
  type Help,
  parseChannels,
  parseFlags,
  parseSendBuffer,
  parseTo,
  printResult,
  state,
  withUsage,
} from "./command.ts";

const QEMU_RECV_USAGE = `usage: migrate.ts qemu-recv --listen HOST:PORT --out DIR [--channels N] [--json]

Receives a migration from QEMU (7.2's stream format, and 8.1's to 10.0's; capability multifd on,
multifd-channels N, zero-copy-send on or off), as QEMU's "-incoming defer" +
"migrate-incoming tcp:HOST:PORT" would:

  --listen HOST:PORT   where QEMU's "migrate" connects (uri tcp:HOST:PORT); PORT 0 picks one (printed)
  --out DIR            each RAM block to DIR/<block id>.ram, the device state verbatim to
                       DIR/state.bin, what came to DIR/manifest.json
  --channels N         QEMU's multifd-channels (default 2, as QEMU's); both sides must agree
  --max-size BYTES     most guest RAM accepted, all blocks together, e.g. 64G (default 64 GiB)
  --json               print one JSON object with the result as the last line of stdout
  -h, --help           this help

Not supported (a clear error, never a wrong image): compression, TLS, postcopy, xbzrle,
mapped-ram, other iterable sections. QEMU's stream is not authenticated: use it on one
host or a network you trust.`;

const QEMU_SEND_USAGE = `usage: migrate.ts qemu-send --to HOST:PORT --from DIR [--channels N] [--zerocopy]
                          [--format 7.2|8.1+] [--send-buffer SIZE] [--json]

Migrates a directory written by qemu-recv into a real QEMU started with "-incoming defer"
(capability multifd on and multifd-channels N set, then "migrate-incoming tcp:HOST:PORT"):

  --to HOST:PORT       the destination's migrate-incoming address
  --from DIR           a directory written by qemu-recv (one RAM block)
  --channels N         the destination's multifd-channels (default 2)
  --zerocopy           page data with MSG_ZEROCOPY (as QEMU's zero-copy-send)
  --send-buffer SIZE   SO_SNDBUF of each multifd channel, e.g. 256K. Default: 256K when the
                       destination is on this host, else the kernel's autotuning
  --format F           the destination's stream format: 7.2 (QEMU 7.2) or 8.1+ (QEMU 8.1 to 10.0
                       with a machine type without 8.0 compat, e.g. -machine none). Default: the
                       format the directory was received in
  --json               print one JSON object with the result as the last line of stdout
  -h, --help           this help`;

export interface QemuSendOptions {
  to: HostPort;
  from: string;
  channels: number;
  zerocopy: boolean;
  format?: "7.2" | "8.1+";
  sendBufferBytes?: number;
  json: boolean;
}

export interface QemuRecvOptions {
  listen: HostPort;
  out: string;
  channels: number;
  maxSize?: number;
  json: boolean;
}

export function parseQemuRecv(args: string[]): { kind: "qemu-recv"; options: QemuRecvOptions } | Help {
  const values = parseFlags(args, {
    listen: { type: "string" },
    out: { type: "string" },
    channels: { type: "string" },
    "max-size": { type: "string" },
    json: { type: "boolean" },
  }, QEMU_RECV_USAGE);
  if (values.help) return { kind: "help", text: QEMU_RECV_USAGE };
  return withUsage(QEMU_RECV_USAGE, () => {
    if (typeof values.listen !== "string") throw new Error("--listen HOST:PORT is required");
    if (typeof values.out !== "string" || values.out === "") throw new Error("--out DIR is required");
    return {
      kind: "qemu-recv" as const,
      options: {
        listen: parseHostPort(values.listen, "--listen"),
        out: values.out,
        channels: parseChannels(values.channels, MAX_QEMU_CHANNELS, 2),
        maxSize: typeof values["max-size"] === "string" ? parseSize(values["max-size"], "--max-size") : undefined,
        json: values.json === true,
      },
    };
  });
}

export function parseQemuSend(args: string[]): { kind: "qemu-send"; options: QemuSendOptions } | Help {
  const values = parseFlags(args, {
    to: { type: "string" },
    from: { type: "string" },
    channels: { type: "string" },
    zerocopy: { type: "boolean" },
    format: { type: "string" },
    "send-buffer": { type: "string" },
    json: { type: "boolean" },
  }, QEMU_SEND_USAGE);
  if (values.help) return { kind: "help", text: QEMU_SEND_USAGE };
  return withUsage(QEMU_SEND_USAGE, () => {
    const to = parseTo(values.to, "a destination's");
    if (typeof values.from !== "string" || values.from === "") throw new Error("--from DIR is required");
    const format = values.format;
    if (format !== undefined && format !== "7.2" && format !== "8.1+") throw new Error(`--format must be 7.2 or 8.1+`);
    return {
      kind: "qemu-send" as const,
      options: {
        to,
        from: values.from,
        channels: parseChannels(values.channels, MAX_QEMU_CHANNELS, 2),
        zerocopy: values.zerocopy === true,
        format: format as "7.2" | "8.1+" | undefined,
        sendBufferBytes: parseSendBuffer(values["send-buffer"]),
        json: values.json === true,
      },
    };
  });
}

/** qemu-recv: the destination of a real QEMU's migration. */
export async function qemuRecv(options: QemuRecvOptions): Promise<number> {
  const receiver = await QemuMigrationReceiver.listen({
    hostname: options.listen.hostname,
    port: options.listen.port,
    channels: options.channels,
    maxSize: options.maxSize,
  }).catch((error) => {
    throw new Failure(`cannot listen on ${options.listen.display}: ${oneLine(error)}`);
  });
  const listening = formatHostPort(options.listen.hostname, receiver.port);
  err(`listening on ${listening}: in QEMU, migrate uri tcp:${listening} (multifd, ${options.channels} channels)`);
  state.abort = () => receiver.abort("interrupted");
  let result: QemuReceiveResult;
  try {
    result = await receiver.receive(options.out);
  } catch (error) {
    throw new Failure(state.interrupted ? "interrupted: migration aborted" : `receive failed: ${oneLine(error)}`);
  } finally {
    state.abort = undefined;
  }
  if (options.json) {
    printResult("qemu-recv", true, { status: "completed", out: options.out, ...result });
  } else {
    const blocks = result.blocks.map((b) => `${b.name} (${formatBytes(b.bytes)})`).join(", ");
    out(
      `done: QEMU's RAM in ${options.out}: ${blocks}; ${formatBytes(result.bytes)} over multifd at ${result.GBps} GB/s`,
    );
  }
  return 0;
}

/**
 * What a QEMU destination's way of ending a send tells (QEMU says nothing to its source; its
 * reason is in its own `query-migrate`): a multifd channel reset is a connection it did not
 * expect (channels beyond its multifd-channels, or every one with multifd off); the main
 * channel closed is the migration it refused (e.g. RAM of another size than the source's);
 * a stall is QEMU waiting for channels it expects, reading nothing until our I/O timeout.
 */
function destinationHint(error: unknown, channels: number): string {
  const lost = (code: string | undefined) => code === "ECONNRESET" || code === "EPIPE";
  if (error instanceof ChannelFailedError && lost(error.code)) {
    return ` (is the destination's multifd capability on, with multifd-channels ${channels}? ` +
      "QEMU resets the connections it does not expect)";
  }
  if (error instanceof SocketError && lost(error.code)) {
    return " (the destination ended the migration: its query-migrate error-desc says why, " +
      "e.g. RAM of another size than the source's)";
  }
  if (error instanceof TimeoutError || (error instanceof ChannelFailedError && error.remote.name === "TimeoutError")) {
    return ` (is the destination's multifd-channels ${channels}? QEMU reads nothing while it waits for more channels)`;
  }
  return "";
}

/** qemu-send: a received directory into a real QEMU destination. */
export async function qemuSend(options: QemuSendOptions): Promise<number> {
  let result: QemuSendResult;
  const interruption = new AbortController();
  state.abort = () => (interruption.abort("interrupted"), Promise.resolve());
  try {
    result = await QemuMigrationSender.send(options.from, {
      hostname: options.to.hostname,
      port: options.to.port,
      channels: options.channels,
      zerocopy: options.zerocopy,
      format: options.format,
      sendBufferBytes: options.sendBufferBytes,
      signal: interruption.signal,
    });
  } catch (error) {
    if (state.interrupted) throw new Failure("interrupted: migration aborted");
    throw new Failure(`send failed: ${oneLine(error)}${destinationHint(error, options.channels)}`);
  } finally {
    state.abort = undefined;
  }
  if (options.json) {
    printResult("qemu-send", true, { status: "sent", from: options.from, ...result });
  } else {
    out(`done: ${options.from} sent to ${options.to.display}: ${formatBytes(result.bytes)} at ${result.GBps} GB/s`);
  }
  return 0;
}
