/**
 * One command, the whole story: a 1 GiB region of random data migrates over loopback on
 * 4 channels with MSG_ZEROCOPY, receiver and sender in this one process (each with its
 * own channel Workers); the copy is verified by checksum and compared byte for byte; the
 * stats of both sides are printed side by side.
 *
 *   deno run -A examples/migrate_demo.ts            # = npm run demo / deno task demo
 *   bun examples/migrate_demo.ts --gib 2 --channels 8 --no-zerocopy --json
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { MAX_CHANNELS, Region, runtime } from "../mod.ts";
import { loopbackPair } from "./loopback_pair.ts";
import { formatBytes, formatSeconds, oneLine, parseInteger, ProgressBar, statsRows, table } from "./cli_util.ts";
import { round } from "../util/format.ts";
import { err, out } from "../util/output.ts";
import { CSPRNG_BYTES, fillRandom } from "../util/random.ts";

const USAGE = `usage: migrate_demo.ts [--gib N] [--channels N] [--no-zerocopy] [--json]

Migrates a region of random data over loopback (both ends in this process), verifies it
and prints the stats of both sides.

  --gib N          region size in GiB (default 1; fractions allowed)
  --channels N     parallel channels, 1..${MAX_CHANNELS} (default 4)
  --no-zerocopy    plain sends instead of MSG_ZEROCOPY
  --json           print one JSON object instead of the tables
  -h, --help       this help`;

function options() {
  try {
    const { values } = parseArgs({
      options: {
        gib: { type: "string", default: "1" },
        channels: { type: "string", default: "4" },
        "no-zerocopy": { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    });
    if (values.help) {
      out(USAGE);
      process.exit(0);
    }
    const gib = Number(values.gib);
    const bytes = Math.round(gib * 2 ** 30);
    if (!/^\d+(\.\d+)?$/.test(values.gib) || !(bytes > 0) || !Number.isSafeInteger(bytes)) {
      throw new Error(`--gib must be a positive number, got "${values.gib}"`);
    }
    return {
      bytes,
      channels: parseInteger(values.channels, "--channels", 1, MAX_CHANNELS),
      zerocopy: !values["no-zerocopy"],
      json: values.json,
    };
  } catch (error) {
    err(`migrate_demo.ts: ${oneLine((error as Error).message)}\n\n${USAGE}`);
    process.exit(2);
  }
}

const { bytes, channels, zerocopy, json } = options();
const say = (text: string) => json || err(text);

async function main(): Promise<number> {
  say(`${runtime}: allocating 2 x ${formatBytes(bytes)} (huge pages, prefaulted)…`);
  let started = performance.now();
  const source = Region.allocate(bytes, { hugePages: true, prefault: true });
  const destination = Region.allocate(bytes, { hugePages: true, prefault: true });
  const allocateSeconds = (performance.now() - started) / 1000;

  say(`filling the source with random data (${formatBytes(Math.min(CSPRNG_BYTES, bytes))} CSPRNG, then xorshift128)…`);
  started = performance.now();
  fillRandom(source);
  const fillSeconds = (performance.now() - started) / 1000;

  const { sender, receiver, receiving } = await loopbackPair(source, destination, { channels, zerocopy });
  say(
    `migrating over 127.0.0.1:${receiver.port}, ${channels} channel${channels === 1 ? "" : "s"}, zero-copy ${
      zerocopy ? "on" : "off"
    }…`,
  );
  const progress = new ProgressBar("migrate", bytes, () => sender.bytesSent, !json && process.stderr.isTTY === true);
  progress.start();
  let sent, received;
  try {
    await sender.sendRound();
    sent = await sender.finish();
    progress.finish(sent);
    received = await receiving;
  } catch (error) {
    await Promise.allSettled([sender.abort(), receiver.abort()]);
    throw error;
  } finally {
    progress.stop();
  }

  started = performance.now();
  const equal = source.equals(destination);
  const compareSeconds = (performance.now() - started) / 1000;
  await source.close();
  await destination.close();
  const ok = sent.verified && received.verified && equal;

  if (json) {
    out(JSON.stringify({
      runtime,
      ok,
      bytes,
      channels,
      zerocopy,
      verified: sent.verified && received.verified,
      equal,
      allocateSeconds: round(allocateSeconds),
      fillSeconds: round(fillSeconds),
      compareSeconds: round(compareSeconds),
      sender: sent,
      receiver: received,
    }));
  } else {
    out("");
    out(table(["", "sender", "receiver"], statsRows([sent, received])));
    out("");
    out(`checksums        ${sent.verified && received.verified ? "match (verified on both sides)" : "DO NOT MATCH"}`);
    out(`byte for byte    ${equal ? "identical" : "DIFFERENT"} (compared in ${formatSeconds(compareSeconds)})`);
    out(
      `set-up           allocate 2 x ${formatBytes(bytes)}: ${formatSeconds(allocateSeconds)}, random fill: ${
        formatSeconds(fillSeconds)
      }`,
    );
    out("");
    if (zerocopy) {
      const allCopied = sent.zerocopySends > 0 && sent.zerocopyCopied === sent.zerocopySends;
      out(
        `Loopback caveat: on loopback the kernel copies every zero-copy send when it delivers the\n` +
          `data locally, and reports it (here ${sent.zerocopyCopied} of ${sent.zerocopySends} sends copied${
            allCopied ? "" : ": not all, unusual on loopback"
          }). So ${sent.zerocopyFallbacks} of ${sent.channels}\n` +
          `channels went on with ordinary sends after their first 32 MiB of zero-copy sends came back copied\n` +
          `(zerocopyFallback; the CLI's --zerocopy-always keeps the flag, as QEMU does). The gain of\n` +
          `zero-copy (no copy into the kernel, less sender CPU) needs a real NIC between two hosts;\n` +
          `loopback throughput says nothing about it.`,
      );
    } else {
      out("Zero-copy was off (--no-zerocopy): every send copied the pages into the kernel.");
    }
  }
  if (!ok) err(`migrate_demo.ts: FAILED: ${equal ? "the checksums were not verified" : "the copy differs"}`);
  return ok ? 0 : 1;
}

try {
  process.exit(await main());
} catch (error) {
  err(`migrate_demo.ts: failed: ${oneLine(error)}`);
  process.exit(1);
}
