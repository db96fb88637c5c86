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
import {
  accessSync,
  closeSync,
  constants,
  fsyncSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { hostname as osHostname } from "node:os";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";
import {
  ChannelFailedError,
  type ChecksumAlgorithm,
  type Cipher,
  DEFAULT_CIPHER,
  DEFAULT_MAX_REGION_BYTES,
  MAX_CHANNELS,
  MAX_QEMU_CHANNELS,
  MIN_SECRET_BYTES,
  MultifdReceiver,
  MultifdSender,
  PAGE_SIZE,
  QemuMigrationReceiver,
  QemuMigrationSender,
  type QemuReceiveResult,
  type QemuSendResult,
  type ReceiverResult,
  Region,
  runtime,
  SEND_BUFFER_BYTES,
  type SenderResult,
  SocketError,
  TimeoutError,
} from "../mod.ts";
import {
  formatBytes,
  formatHostPort,
  type HostPort,
  oneLine,
  parseHostPort,
  parseInteger,
  parseSize,
  ProgressBar,
  statsRows,
  table,
} from "./cli_util.ts";
import { processCpuSeconds, processCpuTimes } from "../util/cpu.ts";
import { round, toHex } from "../util/format.ts";
import { err, out } from "../util/output.ts";

const SECRET_ENV = "ZEROCOPY_MULTIFD_SECRET";
const DEFAULT_CHANNELS = 4;

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

const RECV_USAGE = `usage: migrate.ts recv --listen HOST:PORT --file OUT [options]

  --listen HOST:PORT   address to listen on; PORT 0 picks a free port (printed);
                       IPv6 as [::1]:PORT
  --file OUT           output file: created fresh (replacing any old one), preallocated
                       to the sender's size before any data lands, fsynced before success;
                       removed again if the transfer fails
  --size BYTES         the size of the file the sender will send, e.g. 2G: OUT is created
                       and, in memory (tmpfs, hugetlbfs), its pages allocated while waiting
                       for the sender, so the transfer only copies (QEMU's prealloc=on). A
                       sender with another size is refused
  --channels N         expected channel count. The sender decides the count; when it
                       differs from N a warning is printed (the transfer goes on)
  --max-size BYTES     largest transfer accepted, e.g. 64G (default 64 GiB)
  --encrypt            accept encrypted senders only (send --encrypt); a plain one is refused.
                       Without it the sender decides: an encrypted transfer is received as such
  --accept-timeout S   give up (exit 1) when no sender has authenticated within S seconds
                       (default: wait as long as it takes)
  --secret-file F      shared secret: a file holding hex (>= 32 hex digits) or text
                       (>= ${MIN_SECRET_BYTES} bytes), surrounding whitespace ignored
  --secret-out F       where to write a generated secret (default ./migrate-secret-PORT.key)
  --json               print one JSON object with the stats as the last line of stdout
  --progress           draw the progress bar on stderr even when it is not a terminal
  -h, --help           this help

Secret: --secret-file, else $${SECRET_ENV}, else a fresh random one is generated,
written to a new file readable only by you (0600; deleted when the transfer ends), and
the send command to run is printed. Secrets are never taken from or printed on the
command line.`;

const SEND_USAGE = `usage: migrate.ts send --to HOST:PORT --file IN [options]

  --to HOST:PORT       the receiver (IPv6 as [::1]:PORT)
  --file IN            file to send (any size)
  --channels N         parallel channels, 1..${MAX_CHANNELS} (default ${DEFAULT_CHANNELS}); the receiver follows
  --zerocopy           send page data with MSG_ZEROCOPY (fails if the kernel refuses it); a
                       channel whose first sends the kernel all copies anyway (loopback, veth)
                       goes on with ordinary sends, as the kernel's documentation advises
  --zerocopy-always    with --zerocopy: keep MSG_ZEROCOPY even there (QEMU's behaviour)
  --no-zero-pages      send all-zero pages as data too (by default they go as offsets only, as
                       QEMU sends them, and the receiver makes them zero)
  --encrypt            encrypt every channel (AEGIS-128L; keys from the secret and the session)
  --cipher NAME        encrypt with NAME: aegis-128l (default) or aes-256-gcm; implies --encrypt
  --checksum NAME      the MAC of the end-of-transfer checksum: aegis-128l or blake3. Default:
                       aegis-128l when both ends have AES instructions, else blake3
  --send-buffer SIZE   SO_SNDBUF of each channel, e.g. 256K. Default: 256K when the receiver is on
                       this host (there it keeps the kernel's work on the sending side), else the
                       kernel's autotuning
  --secret-file F      shared secret file (as for recv); default $${SECRET_ENV}
  --json               print one JSON object with the stats as the last line of stdout
  --progress           draw the progress bar on stderr even when it is not a terminal
  -h, --help           this help`;

/** A command-line problem: usage on stderr, exit status 2. */
class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
  }
}

/** A failure with a prepared one-line reason: exit status 1. */
class Failure extends Error {}

// ---------------------------------------------------------------------------------------
// Command line

interface RecvOptions {
  listen: HostPort;
  file: string;
  channels?: number;
  /** The size the sender will send: the output is prepared before it connects (--size). */
  size?: number;
  maxSize?: number;
  acceptTimeoutMs?: number;
  encrypt: boolean;
  secretFile?: string;
  secretOut?: string;
  json: boolean;
  progress: boolean;
}

interface SendOptions {
  to: HostPort;
  file: string;
  channels: number;
  zerocopy: boolean;
  zerocopyFallback: boolean;
  zeroPages: boolean;
  encrypt: false | Cipher;
  checksum?: ChecksumAlgorithm;
  sendBufferBytes?: number;
  secretFile?: string;
  json: boolean;
  progress: boolean;
}

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

interface QemuSendOptions {
  to: HostPort;
  from: string;
  channels: number;
  zerocopy: boolean;
  format?: "7.2" | "8.1+";
  sendBufferBytes?: number;
  json: boolean;
}

interface QemuRecvOptions {
  listen: HostPort;
  out: string;
  channels: number;
  maxSize?: number;
  json: boolean;
}

type Command =
  | { kind: "help"; text: string }
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

function parseFlags(args: string[], options: NonNullable<ParseArgsConfig["options"]>, usage: string) {
  try {
    const config = { args, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true } as const;
    return parseArgs(config).values as Record<string, string | boolean | undefined>;
  } catch (error) {
    throw new UsageError(oneLine((error as Error).message), usage);
  }
}

function withUsage<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message, usage);
  }
}

function parseQemuRecv(args: string[]): Command {
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
        channels: typeof values.channels === "string"
          ? parseInteger(values.channels, "--channels", 1, MAX_QEMU_CHANNELS)
          : 2,
        maxSize: typeof values["max-size"] === "string" ? parseSize(values["max-size"], "--max-size") : undefined,
        json: values.json === true,
      },
    };
  });
}

function parseQemuSend(args: string[]): Command {
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
    if (typeof values.to !== "string") throw new Error("--to HOST:PORT is required");
    if (typeof values.from !== "string" || values.from === "") throw new Error("--from DIR is required");
    const to = parseHostPort(values.to, "--to");
    if (to.port === 0) throw new Error("--to: port 0 is not a destination's port");
    const format = values.format;
    if (format !== undefined && format !== "7.2" && format !== "8.1+") throw new Error(`--format must be 7.2 or 8.1+`);
    return {
      kind: "qemu-send" as const,
      options: {
        to,
        from: values.from,
        channels: typeof values.channels === "string"
          ? parseInteger(values.channels, "--channels", 1, MAX_QEMU_CHANNELS)
          : 2,
        zerocopy: values.zerocopy === true,
        format: format as "7.2" | "8.1+" | undefined,
        sendBufferBytes: typeof values["send-buffer"] === "string"
          ? sendBuffer(parseSize(values["send-buffer"], "--send-buffer"))
          : undefined,
        json: values.json === true,
      },
    };
  });
}

function parseRecv(args: string[]): Command {
  const values = parseFlags(args, {
    listen: { type: "string" },
    file: { type: "string" },
    channels: { type: "string" },
    size: { type: "string" },
    "max-size": { type: "string" },
    "accept-timeout": { type: "string" },
    encrypt: { type: "boolean" },
    "secret-file": { type: "string" },
    "secret-out": { type: "string" },
    json: { type: "boolean" },
    progress: { type: "boolean" },
  }, RECV_USAGE);
  if (values.help) return { kind: "help", text: RECV_USAGE };
  return withUsage(RECV_USAGE, () => {
    if (typeof values.listen !== "string") throw new Error("--listen HOST:PORT is required");
    if (typeof values.file !== "string" || values.file === "") throw new Error("--file OUT is required");
    if (values["secret-file"] !== undefined && values["secret-out"] !== undefined) {
      throw new Error("--secret-out only applies to a generated secret, not with --secret-file");
    }
    const maxSize = typeof values["max-size"] === "string" ? parseSize(values["max-size"], "--max-size") : undefined;
    const size = typeof values.size === "string" ? parseSize(values.size, "--size") : undefined;
    if (size !== undefined && size > (maxSize ?? DEFAULT_MAX_REGION_BYTES)) {
      throw new Error(`--size is larger than --max-size (${maxSize ?? DEFAULT_MAX_REGION_BYTES} bytes)`);
    }
    return {
      kind: "recv" as const,
      options: {
        listen: parseHostPort(values.listen, "--listen"),
        file: values.file,
        channels: typeof values.channels === "string"
          ? parseInteger(values.channels, "--channels", 1, MAX_CHANNELS)
          : undefined,
        size,
        maxSize,
        acceptTimeoutMs: typeof values["accept-timeout"] === "string"
          ? parseInteger(values["accept-timeout"], "--accept-timeout", 1, 2_000_000) * 1000
          : undefined,
        encrypt: values.encrypt === true,
        secretFile: nonEmpty(values["secret-file"], "--secret-file"),
        secretOut: nonEmpty(values["secret-out"], "--secret-out"),
        json: values.json === true,
        progress: values.progress === true,
      },
    };
  });
}

function parseSend(args: string[]): Command {
  const values = parseFlags(args, {
    to: { type: "string" },
    file: { type: "string" },
    channels: { type: "string" },
    zerocopy: { type: "boolean" },
    "zerocopy-always": { type: "boolean" },
    "zero-pages": { type: "boolean" }, // the default; accepted as before
    "no-zero-pages": { type: "boolean" },
    encrypt: { type: "boolean" },
    cipher: { type: "string" },
    checksum: { type: "string" },
    "send-buffer": { type: "string" },
    "secret-file": { type: "string" },
    json: { type: "boolean" },
    progress: { type: "boolean" },
  }, SEND_USAGE);
  if (values.help) return { kind: "help", text: SEND_USAGE };
  return withUsage(SEND_USAGE, () => {
    if (typeof values.to !== "string") throw new Error("--to HOST:PORT is required");
    if (typeof values.file !== "string" || values.file === "") throw new Error("--file IN is required");
    const to = parseHostPort(values.to, "--to");
    if (to.port === 0) throw new Error("--to: port 0 is not a receiver's port");
    const secretFile = nonEmpty(values["secret-file"], "--secret-file");
    if (secretFile === undefined && !process.env[SECRET_ENV]) {
      throw new Error(`a secret is required: --secret-file F (or $${SECRET_ENV})`);
    }
    if (values["zerocopy-always"] && !values.zerocopy) throw new Error("--zerocopy-always needs --zerocopy");
    return {
      kind: "send" as const,
      options: {
        to,
        file: values.file,
        channels: typeof values.channels === "string"
          ? parseInteger(values.channels, "--channels", 1, MAX_CHANNELS)
          : DEFAULT_CHANNELS,
        zerocopy: values.zerocopy === true,
        zerocopyFallback: values["zerocopy-always"] !== true,
        zeroPages: values["no-zero-pages"] !== true,
        encrypt: typeof values.cipher === "string"
          ? parseCipher(values.cipher)
          : values.encrypt === true
          ? DEFAULT_CIPHER
          : false,
        checksum: typeof values.checksum === "string" ? parseChecksum(values.checksum) : undefined,
        sendBufferBytes: typeof values["send-buffer"] === "string"
          ? sendBuffer(parseSize(values["send-buffer"], "--send-buffer"))
          : undefined,
        secretFile,
        json: values.json === true,
        progress: values.progress === true,
      },
    };
  });
}

function parseCipher(name: string): Cipher {
  const ciphers: Cipher[] = ["aegis-128l", "aes-256-gcm"];
  if (!ciphers.includes(name as Cipher)) throw new Error(`--cipher must be ${ciphers.join(" or ")}, got ${name}`);
  return name as Cipher;
}

function parseChecksum(name: string): ChecksumAlgorithm {
  const algorithms: ChecksumAlgorithm[] = ["aegis-128l", "blake3"];
  if (!algorithms.includes(name as ChecksumAlgorithm)) {
    throw new Error(`--checksum must be ${algorithms.join(" or ")}, got ${name}`);
  }
  return name as ChecksumAlgorithm;
}

function sendBuffer(bytes: number): number {
  if (bytes < SEND_BUFFER_BYTES.min || bytes > SEND_BUFFER_BYTES.max) {
    throw new Error(`--send-buffer must be ${SEND_BUFFER_BYTES.min} bytes to 1G, got ${bytes}`);
  }
  return bytes;
}

function nonEmpty(value: string | boolean | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "") throw new Error(`${flag} needs a file name`);
  return value;
}

// ---------------------------------------------------------------------------------------
// Secrets

/**
 * A secret's bytes from text: only hex digits (an even count, at least 32) are decoded as
 * hex, anything else is the UTF-8 text. Surrounding whitespace is ignored. Both ends
 * apply the same rule, so either form works as long as they share the file.
 */
function decodeSecret(text: string, origin: string): Uint8Array {
  const trimmed = text.trim();
  let bytes: Uint8Array;
  if (trimmed.length >= 2 * MIN_SECRET_BYTES && trimmed.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(trimmed)) {
    bytes = new Uint8Array(trimmed.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(trimmed.slice(2 * i, 2 * i + 2), 16);
  } else {
    bytes = new TextEncoder().encode(trimmed);
  }
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new Failure(
      `the secret in ${origin} is too short: ${bytes.length} bytes, at least ${MIN_SECRET_BYTES} needed`,
    );
  }
  return bytes;
}

function readSecretFile(path: string): Uint8Array {
  let text: string;
  try {
    const mode = statSync(path).mode;
    if ((mode & 0o077) !== 0) {
      err(
        `warning: secret file ${path} is accessible by other users (mode ${(mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Failure(`cannot read the secret file ${path}: ${oneLine(error)}`);
  }
  return decodeSecret(text, path);
}

/** The configured secret, or undefined when recv should generate one. */
function configuredSecret(secretFile: string | undefined): Uint8Array | undefined {
  if (secretFile !== undefined) return readSecretFile(secretFile);
  const fromEnv = process.env[SECRET_ENV];
  if (fromEnv) return decodeSecret(fromEnv, `$${SECRET_ENV}`);
  return undefined;
}

/** Writes a new secret file readable only by the user (fails if the file exists). */
function writeSecretFile(path: string, secretHex: string): void {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (error) {
    const exists = (error as { code?: string }).code === "EEXIST";
    throw new Failure(
      exists
        ? `${path} already exists: not overwriting it (remove it, or choose another file with --secret-out)`
        : `cannot create the secret file ${path}: ${oneLine(error)}`,
    );
  }
  try {
    writeSync(fd, secretHex + "\n");
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A word for a shell command line, quoted when it needs to be. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./[\]-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** How to run this script again with the same runtime, as a user would type it. */
function selfCommand(): string {
  const script = fileURLToPath(import.meta.url);
  const fromCwd = relative(process.cwd(), script);
  const path = fromCwd.startsWith("..") || isAbsolute(fromCwd) ? script : fromCwd;
  return runtime === "deno" ? `deno run -A ${shellWord(path)}` : `bun ${shellWord(path)}`;
}

// ---------------------------------------------------------------------------------------
// Running a transfer

/** Set while a transfer runs: Ctrl-C aborts it (a second Ctrl-C exits at once). */
let abortTransfer: (() => Promise<void>) | undefined;
let interrupted = false;
/** Files to remove when the command fails (partial output) or ends (generated secret). */
const cleanupOnFailure: string[] = [];
const cleanupAlways: string[] = [];

function installSignalHandlers(): void {
  const onSignal = (signal: string) => {
    if (interrupted) {
      removeFiles(cleanupOnFailure), removeFiles(cleanupAlways);
      process.exit(130);
    }
    interrupted = true;
    err(`\n${signal}: aborting the transfer (again to exit at once)`);
    if (abortTransfer) {
      abortTransfer().catch(() => {});
    } else {
      removeFiles(cleanupOnFailure), removeFiles(cleanupAlways);
      process.exit(130);
    }
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
}

function removeFiles(paths: string[]): void {
  for (const path of paths.splice(0)) {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  }
}

/** fsync a directory so a newly created file's entry survives a crash (best effort). */
function syncDirectory(path: string): void {
  try {
    const fd = openSync(path, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some runtimes or file systems cannot open/fsync a directory; the file itself is synced.
  }
}

/**
 * recv --size: creates the output before the sender connects and, on a file system in
 * memory, allocates (and so zeroes) its pages now, as QEMU's prealloc=on does for guest
 * RAM; the transfer then only copies. A disk file is only preallocated (fallocate):
 * writing its pages now would write them twice.
 */
function prepareOutput(file: string, size: number, shown: string): Region {
  cleanupOnFailure.push(file);
  let region: Region | undefined;
  try {
    region = Region.createFile(file, size);
    if (region.descriptor.populate) region.prefault(true);
    return region;
  } catch (error) {
    region?.close().catch(() => {});
    throw new Failure(`cannot prepare ${shown} (${formatBytes(size)}): ${oneLine(error)}`);
  }
}

async function recv(options: RecvOptions): Promise<number> {
  const file = resolve(options.file);
  // Fail before listening when the output can never be written.
  try {
    if (statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw new Error("it is a directory");
    accessSync(dirname(file), constants.W_OK);
  } catch (error) {
    throw new Failure(`cannot write ${options.file}: ${oneLine(error)}`);
  }

  let secret = configuredSecret(options.secretFile);
  const generated = secret === undefined;
  if (generated) secret = crypto.getRandomValues(new Uint8Array(32));
  const prepared = options.size === undefined ? undefined : prepareOutput(file, options.size, options.file);
  if (prepared && (!options.json || process.stderr.isTTY)) {
    err(`${options.file}: ${formatBytes(prepared.size)} ready for the sender`);
  }

  const receiver = await MultifdReceiver.listen({
    hostname: options.listen.hostname,
    port: options.listen.port,
    secret: secret!,
    maxSize: options.maxSize,
    acceptTimeoutMs: options.acceptTimeoutMs,
    encrypt: options.encrypt,
  }).catch((error) => {
    throw new Failure(`cannot listen on ${options.listen.display}: ${oneLine(error)}`);
  });
  const listening = formatHostPort(options.listen.hostname, receiver.port);

  if (generated) {
    const path = resolve(options.secretOut ?? `migrate-secret-${receiver.port}.key`);
    try {
      writeSecretFile(path, toHex(secret!));
    } catch (error) {
      receiver.close();
      throw error;
    }
    secret!.fill(0);
    cleanupAlways.push(path);
    const wildcard = ["0.0.0.0", "::", "0:0:0:0:0:0:0:0"].includes(options.listen.hostname);
    const target = formatHostPort(wildcard ? osHostname() : options.listen.hostname, receiver.port);
    err(
      `no secret given: generated one for this transfer in ${path}\n` +
        `  (readable only by you; deleted when the transfer ends). Copy it to the sending host\n` +
        `  (e.g. with scp), then run there${wildcard ? ` (with an address of this host it can reach)` : ""}:\n` +
        `  ${selfCommand()} send --to ${shellWord(target)} --file FILE --secret-file ${shellWord(path)}`,
    );
  }
  err(`listening on ${listening}`);

  let destination: Region | undefined;
  let progress: ProgressBar | undefined;
  let channelsWarned = false;
  const warnChannels = (actual: number) => {
    if (channelsWarned || options.channels === undefined || actual === 0 || actual === options.channels) return;
    channelsWarned = true;
    progress?.stop();
    err(`warning: the sender uses ${actual} channels, not ${options.channels} (--channels): the sender decides`);
    progress?.start();
  };
  const channelWatch = setInterval(() => warnChannels(receiver.stats.channels), 100);
  abortTransfer = () => receiver.abort("interrupted");

  let result: ReceiverResult;
  try {
    result = await receiver.receive((size) => {
      if (prepared && size !== prepared.size) {
        throw new Error(`the sender's file is ${size} bytes, not the ${prepared.size} of --size`);
      }
      if (!prepared) cleanupOnFailure.push(file);
      destination = prepared ?? Region.createFile(file, size);
      if (!options.json || process.stderr.isTTY) err(`receiving ${formatBytes(size)} into ${options.file}`);
      progress = new ProgressBar(
        "recv",
        size,
        () => progressBytes(receiver.bytesReceived, receiver.stats, size),
        showProgress(options),
      );
      progress.start();
      return destination;
    });
    progress?.finish(result);
  } catch (error) {
    throw new Failure(
      interrupted ? "interrupted: transfer aborted" : `receive failed: ${oneLine(error)}`,
    );
  } finally {
    clearInterval(channelWatch);
    progress?.stop();
    abortTransfer = undefined;
  }
  warnChannels(result.channels);
  // receive() has fsynced the file already; once more costs nothing, then the directory entry.
  destination!.sync();
  await destination!.close();
  syncDirectory(dirname(file));

  report("recv", options.json, { file: options.file, ...result }, result.verified);
  if (!result.verified) throw new Failure("the sender did not confirm the checksum: the data is not verified");
  cleanupOnFailure.length = 0;
  if (!options.json) {
    out(`done: ${options.file} (${formatBytes(result.bytes)}) received and verified, checksum ${result.checksum}`);
  }
  return 0;
}

async function send(options: SendOptions): Promise<number> {
  const secret = configuredSecret(options.secretFile)!;
  let source: Region;
  try {
    source = Region.openFile(options.file);
  } catch (error) {
    throw new Failure(`cannot open ${options.file}: ${oneLine(error)}`);
  }
  let progress: ProgressBar | undefined;
  try {
    const sender = await MultifdSender.connect(source, {
      hostname: options.to.hostname,
      port: options.to.port,
      secret,
      channels: options.channels,
      zerocopy: options.zerocopy,
      zerocopyFallback: options.zerocopyFallback,
      zeroPages: options.zeroPages,
      encrypt: options.encrypt,
      checksum: options.checksum,
      sendBufferBytes: options.sendBufferBytes,
    }).catch((error) => {
      throw new Failure(`cannot connect to ${options.to.display}: ${oneLine(error)}`);
    });
    secret.fill(0);
    abortTransfer = () => sender.abort("interrupted");
    if (!options.json || process.stderr.isTTY) {
      err(
        `sending ${options.file} (${
          formatBytes(source.size)
        }) to ${options.to.display} over ${options.channels} channel${options.channels === 1 ? "" : "s"}${
          options.encrypt ? `, encrypted (${options.encrypt})` : ""
        }`,
      );
    }
    progress = new ProgressBar(
      "send",
      source.size,
      () => progressBytes(sender.bytesSent, sender.stats, source.size),
      showProgress(options),
    );
    progress.start();
    let result: SenderResult;
    try {
      await sender.sendRound();
      result = await sender.finish();
      progress.finish(result);
    } catch (error) {
      throw new Failure(interrupted ? "interrupted: transfer aborted" : `send failed: ${oneLine(error)}`);
    } finally {
      progress.stop();
      abortTransfer = undefined;
    }
    report("send", options.json, { file: options.file, ...result }, result.verified);
    if (!result.verified) {
      throw new Failure(
        `checksum mismatch: ours ${result.checksum}, the receiver's ${result.remoteChecksum}: the copy is not verified`,
      );
    }
    if (!options.json) out(`done: ${options.file} sent and verified, checksum ${result.checksum}`);
    return 0;
  } finally {
    await source.close();
  }
}

/** The progress bar: on a terminal, or anywhere with --progress. */
function showProgress(options: { progress: boolean }): boolean {
  return options.progress || process.stderr.isTTY === true;
}

/** Progress in bytes of the region covered: payload plus pages sent as zero pages. */
function progressBytes(payload: number, stats: { pagesZero: number }, total: number): number {
  return Math.min(total, payload + stats.pagesZero * PAGE_SIZE);
}

/** Whether the stats went out already (a --json caller then gets no second JSON line). */
let reported = false;

/** CPU seconds of this process (every thread) when the command began. */
let cpuAtStart = 0;

/**
 * What the process spent, for --json: `cpuSeconds` since the command began (what a transfer
 * cost), `processCpuSeconds` since the process started (runtime start-up too), so that a caller
 * that read the process's CPU at some moment (e.g. from /proc when it starts a migration) can
 * tell what came after it; `processSystemCpuSeconds`, the kernel's part of that.
 */
const cpuFields = () => {
  const { total, system } = processCpuTimes();
  return {
    cpuSeconds: round(total - cpuAtStart),
    processCpuSeconds: round(total),
    processSystemCpuSeconds: round(system),
  };
};

function report(role: "send" | "recv", json: boolean, result: Record<string, unknown>, ok: boolean): void {
  reported = true;
  if (json) {
    out(JSON.stringify({ role, runtime, ok, ...result, ...cpuFields() }));
    return;
  }
  out(table(["", role === "send" ? "sender" : "receiver"], statsRows([result])));
}

// ---------------------------------------------------------------------------------------

/** qemu-recv: the destination of a real QEMU's migration. */
async function qemuRecv(options: QemuRecvOptions): Promise<number> {
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
  abortTransfer = () => receiver.abort("interrupted");
  let result: QemuReceiveResult;
  try {
    result = await receiver.receive(options.out);
  } catch (error) {
    throw new Failure(interrupted ? "interrupted: migration aborted" : `receive failed: ${oneLine(error)}`);
  } finally {
    abortTransfer = undefined;
  }
  reported = true;
  if (options.json) {
    out(JSON.stringify({
      role: "qemu-recv",
      runtime,
      ok: true,
      status: "completed",
      out: options.out,
      ...result,
      ...cpuFields(),
    }));
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
async function qemuSend(options: QemuSendOptions): Promise<number> {
  let result: QemuSendResult;
  const interruption = new AbortController();
  abortTransfer = () => (interruption.abort("interrupted"), Promise.resolve());
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
    if (interrupted) throw new Failure("interrupted: migration aborted");
    throw new Failure(`send failed: ${oneLine(error)}${destinationHint(error, options.channels)}`);
  } finally {
    abortTransfer = undefined;
  }
  reported = true;
  if (options.json) {
    out(JSON.stringify({
      role: "qemu-send",
      runtime,
      ok: true,
      status: "sent",
      from: options.from,
      ...result,
      ...cpuFields(),
    }));
  } else {
    out(`done: ${options.from} sent to ${options.to.display}: ${formatBytes(result.bytes)} at ${result.GBps} GB/s`);
  }
  return 0;
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
  cpuAtStart = processCpuSeconds();
  try {
    if (command.kind === "qemu-recv") return await qemuRecv(command.options);
    if (command.kind === "qemu-send") return await qemuSend(command.options);
    return command.kind === "recv" ? await recv(command.options) : await send(command.options);
  } catch (error) {
    removeFiles(cleanupOnFailure);
    const reason = error instanceof Failure ? error.message : `unexpected error: ${oneLine(error)}`;
    err(`migrate.ts ${command.kind}: ${reason}`);
    // A --json caller gets one JSON line whatever happens (unless stats were printed already).
    if (json && !reported) {
      out(JSON.stringify({ role: command.kind, runtime, ok: false, error: reason }));
    }
    return interrupted ? 130 : 1;
  } finally {
    removeFiles(cleanupAlways);
  }
}

process.exit(await main(process.argv.slice(2)));
