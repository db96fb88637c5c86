/**
 * Moves a file between two hosts over N multifd channels (optionally with MSG_ZEROCOPY),
 * authenticated with a shared secret, verified by checksum at the end.
 *
 *   # on the destination host (generates a secret file and prints the command for the sender)
 *   deno run -A examples/migrate.ts recv --listen 0.0.0.0:4444 --file guest.img
 *   # on the source host, with that secret file copied over
 *   deno run -A examples/migrate.ts send --to dest-host:4444 --file guest.img --secret-file migrate-secret-4444.key
 *
 * Works the same with `bun examples/migrate.ts …`. Exit status: 0 done and verified,
 * 1 the transfer failed (reason on stderr), 2 usage error, 130 interrupted.
 * @module
 */
import process from "node:process";
import { runtime } from "../mod.ts";
import { oneLine } from "./cli_util.ts";
import { processCpuSeconds } from "../util/cpu.ts";
import { err, out } from "../util/output.ts";
import { Failure, type Help, installSignalHandlers, removeFiles, state, UsageError } from "./migrate/command.ts";
import { parseRecv, parseSend, recv, type RecvOptions, send, type SendOptions } from "./migrate/file_transfer.ts";
import {
  parseQemuRecv,
  parseQemuSend,
  qemuRecv,
  type QemuRecvOptions,
  qemuSend,
  type QemuSendOptions,
} from "./migrate/qemu.ts";

const USAGE = `usage: migrate.ts <command> [options]

Copies a file to another host over several parallel TCP channels (multifd), optionally
with MSG_ZEROCOPY, authenticated by a shared secret and verified by checksum.

commands:
  recv       listen and receive into a file (start this first, on the destination)
  send       send a file to a listening receiver
  qemu-recv  be the destination of a real QEMU's multifd migration: RAM blocks to files
  qemu-send  migrate what qemu-recv received into a real QEMU destination

Run "migrate.ts <command> --help" for the options of a command.
Exit status: 0 success (verified), 1 transfer failed, 2 usage error, 130 interrupted.`;

type Command =
  | Help
  | { kind: "recv"; options: RecvOptions }
  | { kind: "send"; options: SendOptions }
  | { kind: "qemu-recv"; options: QemuRecvOptions }
  | { kind: "qemu-send"; options: QemuSendOptions };

function parseCommandLine(argv: string[]): Command {
  const [command, ...rest] = argv;
  if (command === undefined) throw new UsageError("missing command", USAGE);
  if (command === "-h" || command === "--help" || command === "help") return { kind: "help", text: USAGE };
  if (command === "recv") return parseRecv(rest);
  if (command === "send") return parseSend(rest);
  if (command === "qemu-recv") return parseQemuRecv(rest);
  if (command === "qemu-send") return parseQemuSend(rest);
  throw new UsageError(`unknown command "${command}"`, USAGE);
}

async function main(argv: string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommandLine(argv);
  } catch (error) {
    if (error instanceof UsageError) {
      err(`migrate.ts: ${error.message}\n\n${error.usage}`);
      return 2;
    }
    throw error;
  }
  if (command.kind === "help") {
    out(command.text);
    return 0;
  }
  const json = command.options.json;
  installSignalHandlers();
  state.cpuAtStart = processCpuSeconds();
  try {
    if (command.kind === "qemu-recv") return await qemuRecv(command.options);
    if (command.kind === "qemu-send") return await qemuSend(command.options);
    return command.kind === "recv" ? await recv(command.options) : await send(command.options);
  } catch (error) {
    removeFiles(state.cleanupOnFailure);
    const reason = error instanceof Failure ? error.message : `unexpected error: ${oneLine(error)}`;
    err(`migrate.ts ${command.kind}: ${reason}`);
    // A --json caller gets one JSON line whatever happens (unless stats were printed already).
    if (json && !state.reported) {
      out(JSON.stringify({ role: command.kind, runtime, ok: false, error: reason }));
    }
    return state.interrupted ? 130 : 1;
  } finally {
    removeFiles(state.cleanupAlways);
  }
}

process.exit(await main(process.argv.slice(2)));
