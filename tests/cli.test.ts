// examples/migrate.ts end to end: a receiver and a sender process moving a file whose size
// is not a page multiple, usage errors, --help, a wrong secret, a generated secret, a file
// written while it is sent (checksum mismatch), the progress bar's last line (the transfer's
// own bytes / seconds) and the numbers behind the bar (sliding-window rate, line format).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { lastJson, LineChild, run } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";
import { formatRate, formatSeconds, progressLine, SlidingRate } from "../examples/cli_util.ts";
import { fastAegisChecksum } from "../src/multifd/checksum.ts";

const cli = fileURLToPath(new URL("../examples/migrate.ts", import.meta.url));
const SIZE = 37 * 2 ** 20 + 123;
const SECRET_ENV = "ZEROCOPY_MULTIFD_SECRET";

interface Receiver {
  child: LineChild;
  /** Resolves with the port once the receiver prints "listening on 127.0.0.1:PORT". */
  port: Promise<number>;
  exited: Promise<{ code: number | null; stdout: string; stderr: string }>;
  stderr: () => string;
  kill: () => Promise<void>;
}

/**
 * Starts `migrate.ts recv …` as a child process (async: the test keeps running), without a
 * secret in its environment: every test says where its secret comes from.
 */
function startReceiver(args: string[], cwd?: string): Receiver {
  const child = new LineChild(runtimeArgv(cli, ["recv", ...args]), { cwd, env: { [SECRET_ENV]: undefined } });
  const port = child.waitFor(/listening on 127\.0\.0\.1:(\d+)/, "stderr").then((match) => Number(match[1]));
  port.catch(() => {});
  const exited = child.exited.then(({ code }) => ({ code, stdout: child.stdout, stderr: child.stderr }));
  return { child, port, exited, stderr: () => child.stderr, kill: () => child.kill() };
}

function randomFile(path: string, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(size, offset + 65536)));
  }
  writeFileSync(path, bytes);
  return bytes;
}

/** The frames of the progress bar `label` drew on stderr (each redraw starts with "\r\x1b[2K"). */
function progressFrames(stderr: string, label: string): string[] {
  return stderr.split("\r\x1b[2K").flatMap((part) => part.split("\n")).filter((frame) =>
    frame.startsWith(`${label} [`)
  );
}

describe("the progress bar's numbers", () => {
  test("live rate: over a sliding window, following a change of speed and a stall", () => {
    const rate = new SlidingRate(3);
    let bytes = 0;
    let now = 0;
    const advance = (seconds: number, bytesPerSecond: number) => {
      let latest = NaN;
      for (let i = 0; i < Math.round(seconds / 0.2); i++) {
        now += 0.2;
        bytes += bytesPerSecond * 0.2;
        latest = rate.add(now, bytes);
      }
      return latest;
    };
    assert.ok(Number.isNaN(rate.add(0, 0)), "no rate from one sample");
    assert.ok(Math.abs(advance(2, 230e6) - 230e6) < 1, "steady 230 MB/s");
    // A slower phase: within one window the rate is the new speed exactly, not an average since the start.
    assert.ok(Math.abs(advance(4, 100e6) - 100e6) < 1, "100 MB/s after the window has passed");
    // A stall (a round's sync, the checksum): the live rate says so.
    assert.equal(advance(3.2, 0), 0);
  });

  test("the line: ETA while running; at 100% the average rate and the time the transfer took", () => {
    // 1 GiB in 4.668 s (the JSON result's bytes and seconds): 230.0 MB/s.
    assert.equal(
      progressLine("send", 2 ** 30, 2 ** 30, 2 ** 30 / 4.668, 4.668),
      "send [############] 100.0%  1.00 GiB / 1.00 GiB  230.0 MB/s  4.67 s",
    );
    assert.equal(
      progressLine("recv", 2 ** 29, 2 ** 30, 230e6, 2.3),
      "recv [######------]  50.0%  512.00 MiB / 1.00 GiB  230.0 MB/s  ETA 2.33 s",
    );
    assert.equal(progressLine("recv", 0, 2 ** 30, NaN, 0), "recv [------------]   0.0%  0 B / 1.00 GiB  -  ETA -");
    assert.equal(formatRate(2 ** 30 / 0.5), "2.15 GB/s");
  });
});

describe("migrate.ts", () => {
  let dir = "";
  let input = "";
  let secretFile = "";
  let inputBytes: Uint8Array;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "migrate-cli-"));
    input = join(dir, "in.bin");
    inputBytes = randomFile(input, SIZE);
    secretFile = join(dir, "secret.key");
    writeFileSync(secretFile, "00112233445566778899aabbccddeeff0123456789abcdef\n", { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A receiver on a free loopback port writing `output`, with this suite's secret and `--json`, and `extra`. */
  const receiveTo = (output: string, ...extra: string[]) =>
    startReceiver(["--listen", "127.0.0.1:0", "--file", output, "--json", "--secret-file", secretFile, ...extra]);

  test("recv and send move a file of an odd size, zero-copy, 2 channels, verified", async () => {
    const output = join(dir, "out.bin");
    const receiver = receiveTo(output);
    try {
      const port = await receiver.port;
      const sender = await run(
        runtimeArgv(cli, [
          "send",
          "--to",
          `127.0.0.1:${port}`,
          "--file",
          input,
          "--json",
          "--secret-file",
          secretFile,
          "--zerocopy",
          "--channels",
          "2",
          "--send-buffer",
          "256K",
        ]),
        60_000,
      );
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);

      const sent = lastJson(sender.stdout);
      const got = lastJson(received.stdout);
      for (const result of [sent, got]) {
        assert.equal(result.verified, true);
        assert.equal(result.bytes, SIZE);
        assert.equal(result.channels, 2);
        assert.equal(result.rounds, 1);
        assert.equal(result.pagesNormal, Math.ceil(SIZE / 4096));
        const fields = ["seconds", "GBps", "zerocopySends", "zerocopyCopied", "zerocopyFallbacks", "pagesZero"];
        for (const field of [...fields, "checksumSeconds"]) {
          assert.equal(typeof result[field], "number", field);
        }
        // What the command cost: at least the Workers' start and the checksum's pass over the file.
        assert.ok(result.cpuSeconds > 0, `cpuSeconds ${result.cpuSeconds}`);
        // …and the whole process, whose runtime start-up came before the command.
        assert.ok(
          result.processCpuSeconds > result.cpuSeconds,
          `processCpuSeconds ${result.processCpuSeconds}, cpuSeconds ${result.cpuSeconds}`,
        );
        // Its kernel part: the socket copies at least, never more than the whole.
        assert.ok(
          result.processSystemCpuSeconds > 0 && result.processSystemCpuSeconds <= result.processCpuSeconds,
          `processSystemCpuSeconds ${result.processSystemCpuSeconds}, processCpuSeconds ${result.processCpuSeconds}`,
        );
      }
      assert.equal(sent.zerocopy, true);
      assert.ok(sent.zerocopySends > 0);
      assert.equal(sent.checksum, got.checksum);
      // Both ends run this machine's default build: AEGIS-128L-MAC where it has AES instructions.
      assert.equal(sent.checksumAlgorithm, fastAegisChecksum() ? "aegis-128l" : "blake3");
      assert.equal(got.checksumAlgorithm, sent.checksumAlgorithm);
      assert.equal(sender.stdout.trim().split("\n").length, 1, "--json: one line on stdout");

      const outputBytes = readFileSync(output);
      assert.equal(outputBytes.length, SIZE);
      assert.ok(outputBytes.equals(inputBytes), "the output differs from the input");
    } finally {
      await receiver.kill();
    }
  });

  test("all-zero pages go as offsets by default and as data with --no-zero-pages; the output is the same", async () => {
    const sparse = join(dir, "sparse.bin");
    const bytes = randomFile(sparse, 8 * 2 ** 20 + 5);
    bytes.fill(0, 4096, 4096 + 300 * 4096); // 300 zero pages after the first
    bytes.fill(0, bytes.length - 5); // and the short last page
    writeFileSync(sparse, bytes);
    for (const flags of [[], ["--no-zero-pages"]]) {
      const output = join(dir, `sparse-out${flags.length}.bin`);
      const receiver = receiveTo(output);
      try {
        const port = await receiver.port;
        const args = ["send", "--to", `127.0.0.1:${port}`, "--file", sparse, "--json", "--secret-file", secretFile];
        const sender = await run(runtimeArgv(cli, [...args, ...flags]), 60_000);
        assert.equal(sender.code, 0, sender.stderr);
        const received = await receiver.exited;
        assert.equal(received.code, 0, received.stderr);
        const [sent, got] = [lastJson(sender.stdout), lastJson(received.stdout)];
        const zeroPages = flags.length === 0 ? 301 : 0;
        for (const result of [sent, got]) {
          assert.equal(result.verified, true);
          assert.equal(result.pagesZero, zeroPages, flags.join(" ") || "default");
          assert.equal(result.pagesNormal + result.pagesZero, Math.ceil(bytes.length / 4096));
        }
        assert.equal(sent.bytes, bytes.length - (flags.length === 0 ? 300 * 4096 + 5 : 0), "payload bytes sent");
        assert.ok(readFileSync(output).equals(bytes), "the output differs from the input");
      } finally {
        await receiver.kill();
      }
    }
  });

  test("--cipher aes-256-gcm --checksum blake3 with --zerocopy, recv --encrypt: encrypted end to end, verified, byte-identical", async () => {
    const output = join(dir, "encrypted-out.bin");
    const receiver = receiveTo(output, "--encrypt");
    try {
      const port = await receiver.port;
      const sender = await run(
        runtimeArgv(cli, [
          "send",
          "--to",
          `127.0.0.1:${port}`,
          "--file",
          input,
          "--json",
          "--secret-file",
          secretFile,
          "--zerocopy",
          "--cipher",
          "aes-256-gcm",
          "--checksum",
          "blake3",
        ]),
        60_000,
      );
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      for (const result of [lastJson(sender.stdout), lastJson(received.stdout)]) {
        assert.equal(result.verified, true);
        assert.equal(result.encryption, "aes-256-gcm");
        assert.equal(result.checksumAlgorithm, "blake3");
      }
      assert.ok(readFileSync(output).equals(inputBytes), "the output differs from the input");
    } finally {
      await receiver.kill();
    }
  });

  test("recv --size: the output is allocated before the sender connects; a sender of another size is refused", async () => {
    // In memory (tmpfs), where --size also allocates the pages ahead.
    const shm = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "migrate-cli-size-"));
    const secret = ["--secret-file", secretFile];
    const send = (port: number) =>
      run(runtimeArgv(cli, ["send", "--to", `127.0.0.1:${port}`, "--file", input, ...secret]), 60_000);
    try {
      const output = join(shm, "out.bin");
      const ready = startReceiver([
        "--listen",
        "127.0.0.1:0",
        "--file",
        output,
        "--size",
        String(SIZE),
        "--json",
        ...secret,
      ]);
      try {
        const port = await ready.port;
        const before = statSync(output);
        assert.equal(before.size, SIZE);
        assert.ok(before.blocks * 512 >= SIZE, `allocated before the sender: ${before.blocks * 512} of ${SIZE} bytes`);
        const sender = await send(port);
        assert.equal(sender.code, 0, sender.stderr);
        const received = await ready.exited;
        assert.equal(received.code, 0, received.stderr);
        assert.equal(lastJson(received.stdout).verified, true);
        assert.ok(readFileSync(output).equals(inputBytes), "the output differs from the input");
      } finally {
        await ready.kill();
      }

      const wrong = join(shm, "wrong.bin");
      const refusing = startReceiver([
        "--listen",
        "127.0.0.1:0",
        "--file",
        wrong,
        "--size",
        String(SIZE - 1),
        ...secret,
      ]);
      try {
        const sender = await send(await refusing.port);
        assert.equal(sender.code, 1, sender.stderr);
        const refused = await refusing.exited;
        assert.equal(refused.code, 1, refused.stderr);
        assert.match(refused.stderr, new RegExp(`the sender's file is ${SIZE} bytes, not the ${SIZE - 1} of --size`));
        assert.equal(existsSync(wrong), false, "no output kept");
      } finally {
        await refusing.kill();
      }
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });

  test("recv --encrypt refuses a plain sender: both exit 1 saying why, no output kept", async () => {
    const output = join(dir, "refused-out.bin");
    const receiver = startReceiver([
      "--listen",
      "127.0.0.1:0",
      "--file",
      output,
      "--encrypt",
      "--secret-file",
      secretFile,
    ]);
    try {
      const port = await receiver.port;
      const sender = await run(
        runtimeArgv(cli, ["send", "--to", `127.0.0.1:${port}`, "--file", input, "--secret-file", secretFile]),
        60_000,
      );
      assert.equal(sender.code, 1, sender.stderr);
      assert.match(sender.stderr, /encrypted channels only/);
      const received = await receiver.exited;
      assert.equal(received.code, 1, received.stderr);
      assert.match(received.stderr, /encrypted channels only/);
      assert.equal(existsSync(output), false);
    } finally {
      await receiver.kill();
    }
  });

  test("--progress on a pipe: both bars end with the transfer's own numbers, bytes / seconds as in the JSON", async () => {
    const output = join(dir, "progress-out.bin");
    const flags = ["--json", "--progress", "--secret-file", secretFile];
    const receiver = startReceiver(["--listen", "127.0.0.1:0", "--file", output, ...flags]);
    try {
      const port = await receiver.port;
      const sender = await run(
        runtimeArgv(cli, ["send", "--to", `127.0.0.1:${port}`, "--file", input, ...flags]),
        60_000,
      );
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);

      const sides = [["send", sender.stderr, sender.stdout], ["recv", received.stderr, received.stdout]];
      for (const [label, stderr, stdout] of sides) {
        const result = lastJson(stdout);
        const frames = progressFrames(stderr, label);
        assert.ok(
          frames.length >= 2,
          `${label}: the bar was drawn at the start and at the end: ${JSON.stringify(stderr)}`,
        );
        const last = frames.at(-1)!;
        // The final line: 100%, bytes / seconds of the result as the rate, its seconds as the time.
        assert.equal(last, progressLine(label, SIZE, SIZE, result.bytes / result.seconds, result.seconds));
        assert.ok(
          last.endsWith(
            `100.0%  37.00 MiB / 37.00 MiB  ${formatRate(result.bytes / result.seconds)}  ${
              formatSeconds(result.seconds)
            }`,
          ),
          last,
        );
        assert.ok(stderr.includes(`${last}\n`), `${label}: the final line stays on screen`);
        // The same number as the result's GBps, up to the rounding of seconds to 1 ms.
        const tolerance = result.GBps * 0.0005 / result.seconds + 0.0005;
        assert.ok(Math.abs(result.bytes / result.seconds / 1e9 - result.GBps) <= tolerance, JSON.stringify(result));
      }
      assert.ok(readFileSync(output).equals(inputBytes));
    } finally {
      await receiver.kill();
    }
  });

  test("bad command lines exit 2 with usage, --help exits 0", async () => {
    const secret = ["--secret-file", secretFile];
    const bad = [
      [],
      ["bogus"],
      ["recv", "--file", "x"],
      ["recv", "--listen", "127.0.0.1:0"],
      ["recv", "--listen", "127.0.0.1", "--file", "x"],
      ["recv", "--listen", "127.0.0.1:70000", "--file", "x"],
      ["recv", "--listen", "127.0.0.1:0", "--file", "x", "--channels", "0"],
      ["recv", "--listen", "127.0.0.1:0", "--file", "x", "--max-size", "lots"],
      ["recv", "--listen", "127.0.0.1:0", "--file", "x", "--size", "2G", "--max-size", "1G"],
      ["recv", "--listen", "127.0.0.1:0", "--file", "x", "--size", "-1"],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--unknown", ...secret],
      ["send", "--to", "127.0.0.1:1", ...secret],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--channels", "many", ...secret],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--json", "extra", ...secret],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--send-buffer", "1K", ...secret],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--send-buffer", "big", ...secret],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--zerocopy-always", ...secret],
      ["send", "--to", "127.0.0.1:1", "--file", input, "--checksum", "md5", ...secret],
      ["send", "--file", input, ...secret],
      ["send", "--to", "127.0.0.1:0", "--file", input, ...secret],
      ["qemu-send", "--from", "dir"],
      ["qemu-send", "--to", "127.0.0.1:0", "--from", "dir"],
      ["qemu-send", "--to", "127.0.0.1:1", "--from", "dir", "--send-buffer", "1K"],
      ["qemu-send", "--to", "127.0.0.1:1", "--from", "dir", "--channels", "0"],
      ["qemu-recv", "--listen", "127.0.0.1:0", "--out", "dir", "--channels", "300"],
    ];
    // What the messages name, for the flags the commands share.
    const reasons: Record<string, RegExp> = {
      "send --file": /--to HOST:PORT is required/,
      "send --to 127.0.0.1:0": /port 0 is not a receiver's port/,
      "qemu-send --from": /--to HOST:PORT is required/,
      "qemu-send --to 127.0.0.1:0": /port 0 is not a destination's port/,
    };
    const help = [["--help"], ["recv", "--help"], ["send", "-h"], ["qemu-recv", "--help"], ["qemu-send", "-h"]];
    const [badResults, helpResults] = await Promise.all([
      Promise.all(bad.map((args) => run(runtimeArgv(cli, args), 30_000))),
      Promise.all(help.map((args) => run(runtimeArgv(cli, args), 30_000))),
    ]);
    badResults.forEach((result, i) => {
      assert.equal(result.code, 2, `${bad[i].join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, /usage: migrate\.ts/, bad[i].join(" "));
      const reason = reasons[bad[i].slice(0, 3).join(" ")] ?? reasons[bad[i].slice(0, 2).join(" ")];
      if (reason) assert.match(result.stderr, reason, bad[i].join(" "));
    });
    helpResults.forEach((result, i) => {
      assert.equal(result.code, 0, `${help[i].join(" ")}: ${result.stderr}`);
      assert.match(result.stdout, /usage: migrate\.ts/);
    });
  });

  test("a sender with the wrong secret fails; the receiver ignores it and takes the right one", async () => {
    const output = join(dir, "after-wrong.bin");
    const wrong = join(dir, "wrong.key");
    writeFileSync(wrong, "a different secret, long enough\n", { mode: 0o600 });
    const small = join(dir, "small-2.bin");
    const smallBytes = randomFile(small, 3 * 4096);
    const receiver = receiveTo(output);
    try {
      const port = await receiver.port;
      const sendWith = (key: string) =>
        run(runtimeArgv(cli, ["send", "--to", `127.0.0.1:${port}`, "--file", small, "--secret-file", key]), 30_000);
      const rejected = await sendWith(wrong);
      assert.notEqual(rejected.code, 0);
      assert.match(rejected.stderr, /wrong secret/);
      assert.equal(rejected.stderr.trim().split("\n").length, 1, `one line of reason: ${rejected.stderr}`);
      assert.equal(receiver.child.process.exitCode, null, "the receiver must keep waiting for the right sender");
      assert.equal(existsSync(output), false, "no output before an authenticated sender");

      const accepted = await sendWith(secretFile);
      assert.equal(accepted.code, 0, accepted.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      const result = lastJson(received.stdout);
      assert.equal(result.verified, true);
      assert.ok(result.rejectedConnections >= 1, `rejectedConnections: ${result.rejectedConnections}`);
      assert.ok(readFileSync(output).equals(smallBytes));
    } finally {
      await receiver.kill();
    }
  });

  test("a file written while it is sent: checksum mismatch, both ends exit 1, no output kept", async () => {
    const output = join(dir, "mismatch-out.bin");
    const changing = join(dir, "changing.bin");
    const size = 8 * 2 ** 20 + 77;
    randomFile(changing, size);
    const receiver = receiveTo(output);
    // Another writer keeps changing the file during the whole send, as a live file would be:
    // what the sender checksums at the end is not what it sent.
    const fd = openSync(changing, "r+");
    let writes = 0;
    const stamp = new Uint8Array(8);
    const writer = setInterval(() => {
      new DataView(stamp.buffer).setFloat64(0, ++writes);
      for (const at of [0, 4096 * 1000, size - 8]) writeSync(fd, stamp, 0, stamp.length, at);
    }, 1);
    try {
      const port = await receiver.port;
      const sender = await run(
        runtimeArgv(cli, [
          "send",
          "--to",
          `127.0.0.1:${port}`,
          "--file",
          changing,
          "--json",
          "--secret-file",
          secretFile,
        ]),
        60_000,
      );
      clearInterval(writer);
      const received = await receiver.exited;
      assert.ok(writes > 1, `the writer did not run during the send (${writes} writes)`);

      assert.equal(sender.code, 1, `sender exited ${sender.code}, not 1 (checksum mismatch): ${sender.stderr}`);
      assert.match(sender.stderr, /checksum mismatch: ours [0-9a-f]+, the receiver's [0-9a-f]+/);
      const sent = lastJson(sender.stdout);
      assert.equal(sent.ok, false);
      assert.equal(sent.verified, false);
      assert.notEqual(sent.checksum, sent.remoteChecksum);

      assert.equal(received.code, 1, `receiver exited ${received.code}, not 1 (unverified): ${received.stderr}`);
      assert.match(received.stderr, /the sender did not confirm the checksum/);
      const got = lastJson(received.stdout);
      assert.equal(got.ok, false);
      assert.equal(got.verified, false);
      assert.equal(got.checksum, sent.remoteChecksum);
      assert.equal(existsSync(output), false, "an unverified output file must be removed");
    } finally {
      clearInterval(writer);
      closeSync(fd);
      await receiver.kill();
    }
  });

  test("recv without a secret generates a 0600 secret file and prints the send command", async () => {
    const output = join(dir, "generated.bin");
    const small = join(dir, "small.bin");
    const smallBytes = randomFile(small, 2 ** 20 + 5);
    const receiver = startReceiver(["--listen", "127.0.0.1:0", "--file", output, "--channels", "3"], dir);
    try {
      const port = await receiver.port;
      const command = /(\S+ )*send --to 127\.0\.0\.1:(\d+) --file \S+ --secret-file (\S+)/.exec(receiver.stderr());
      assert.ok(command, `no send command in: ${receiver.stderr()}`);
      assert.equal(Number(command[2]), port);
      const keyFile = command[3];
      assert.equal(keyFile, join(dir, `migrate-secret-${port}.key`));
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      const key = readFileSync(keyFile, "utf8").trim();
      assert.match(key, /^[0-9a-f]{64}$/);
      assert.ok(!receiver.stderr().includes(key), "the secret must not be printed");

      const sender = await run(
        runtimeArgv(cli, [
          "send",
          "--to",
          `127.0.0.1:${port}`,
          "--file",
          small,
          "--secret-file",
          keyFile,
          "--channels",
          "2",
        ]),
        30_000,
      );
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      assert.match(received.stderr, /warning: the sender uses 2 channels, not 3/);
      for (const text of [sender.stdout, sender.stderr, received.stdout, received.stderr]) {
        assert.ok(!text.includes(key), "the secret must not be printed");
      }
      assert.ok(readFileSync(output).equals(smallBytes));
      assert.equal(existsSync(keyFile), false, "the generated secret is removed when the transfer ends");
    } finally {
      await receiver.kill();
    }
  });
});
