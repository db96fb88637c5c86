/**
 * migrate.ts recv and send: a file over N multifd channels, authenticated by the shared
 * secret and verified by checksum at the end.
 * @module
 */
import { accessSync, closeSync, constants, fsyncSync, openSync, statSync } from "node:fs";
import { hostname as osHostname } from "node:os";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  type ChecksumAlgorithm,
  type Cipher,
  DEFAULT_CIPHER,
  DEFAULT_MAX_REGION_BYTES,
  MAX_CHANNELS,
  MIN_SECRET_BYTES,
  MultifdReceiver,
  MultifdSender,
  PAGE_SIZE,
  type ReceiverResult,
  Region,
  runtime,
  type SenderResult,
} from "../../mod.ts";
import {
  formatBytes,
  formatHostPort,
  type HostPort,
  oneLine,
  parseHostPort,
  parseInteger,
  parseSize,
  ProgressBar,
} from "../cli_util.ts";
import { toHex } from "../../util/format.ts";
import { err, out } from "../../util/output.ts";
import {
  Failure,
  type Help,
  nonEmpty,
  parseChannels,
  parseFlags,
  parseSendBuffer,
  parseTo,
  report,
  state,
  withUsage,
} from "./command.ts";
import { configuredSecret, SECRET_ENV, writeSecretFile } from "./secret.ts";

const DEFAULT_CHANNELS = 4;

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

export interface RecvOptions {
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

export interface SendOptions {
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

export function parseRecv(args: string[]): { kind: "recv"; options: RecvOptions } | Help {
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
        channels: parseChannels(values.channels, MAX_CHANNELS, undefined),
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

export function parseSend(args: string[]): { kind: "send"; options: SendOptions } | Help {
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
    const to = parseTo(values.to, "a receiver's");
    if (typeof values.file !== "string" || values.file === "") throw new Error("--file IN is required");
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
        channels: parseChannels(values.channels, MAX_CHANNELS, DEFAULT_CHANNELS),
        zerocopy: values.zerocopy === true,
        zerocopyFallback: values["zerocopy-always"] !== true,
        zeroPages: values["no-zero-pages"] !== true,
        encrypt: typeof values.cipher === "string"
          ? parseCipher(values.cipher)
          : values.encrypt === true
          ? DEFAULT_CIPHER
          : false,
        checksum: typeof values.checksum === "string" ? parseChecksum(values.checksum) : undefined,
        sendBufferBytes: parseSendBuffer(values["send-buffer"]),
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

/** A word for a shell command line, quoted when it needs to be. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./[\]-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** How to run this script again with the same runtime, as a user would type it. */
function selfCommand(): string {
  const script = fileURLToPath(new URL("../migrate.ts", import.meta.url));
  const fromCwd = relative(process.cwd(), script);
  const path = fromCwd.startsWith("..") || isAbsolute(fromCwd) ? script : fromCwd;
  return runtime === "deno" ? `deno run -A ${shellWord(path)}` : `bun ${shellWord(path)}`;
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
  state.cleanupOnFailure.push(file);
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

export async function recv(options: RecvOptions): Promise<number> {
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
    state.cleanupAlways.push(path);
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
  state.abort = () => receiver.abort("interrupted");

  let result: ReceiverResult;
  try {
    result = await receiver.receive((size) => {
      if (prepared && size !== prepared.size) {
        throw new Error(`the sender's file is ${size} bytes, not the ${prepared.size} of --size`);
      }
      if (!prepared) state.cleanupOnFailure.push(file);
      // Sparse on tmpfs: the receive starts without reserving every page first.
      destination = prepared ?? Region.createFile(file, size, { sparse: true });
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
      state.interrupted ? "interrupted: transfer aborted" : `receive failed: ${oneLine(error)}`,
    );
  } finally {
    clearInterval(channelWatch);
    progress?.stop();
    state.abort = undefined;
  }
  warnChannels(result.channels);
  // receive() has fsynced the file already; once more costs nothing, then the directory entry.
  destination!.sync();
  await destination!.close();
  syncDirectory(dirname(file));

  report("recv", options.json, { file: options.file, ...result }, result.verified);
  if (!result.verified) throw new Failure("the sender did not confirm the checksum: the data is not verified");
  state.cleanupOnFailure.length = 0;
  if (!options.json) {
    out(`done: ${options.file} (${formatBytes(result.bytes)}) received and verified, checksum ${result.checksum}`);
  }
  return 0;
}

export async function send(options: SendOptions): Promise<number> {
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
    state.abort = () => sender.abort("interrupted");
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
      throw new Failure(state.interrupted ? "interrupted: transfer aborted" : `send failed: ${oneLine(error)}`);
    } finally {
      progress.stop();
      state.abort = undefined;
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
