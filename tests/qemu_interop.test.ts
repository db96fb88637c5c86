// Talking to QEMU: a real QEMU 7.2 (Debian's qemu-system-x86) and 10.0 (bookworm-backports)
// migrate a `-machine none` guest into our QemuMigrationReceiver over multifd, 1, 2 and 4
// channels, with and without zero-copy-send on QEMU's side: QEMU reports `completed`, the RAM file we wrote equals
// QEMU's backing file byte for byte, the manifest says what came. In CI QEMU is installed
// and these tests must run (tests/helpers/preconditions.ts).
import { afterEach, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ChannelClosedError,
  ChannelFailedError,
  InvalidArgumentError,
  ProtocolError,
  QemuMigrationReceiver,
  QemuMigrationSender,
  type QemuReceiveResult,
  SAME_HOST_SEND_BUFFER_BYTES,
  TimeoutError,
  TransferAbortedError,
} from "../mod.ts";
import net from "node:net";
import type { QemuVersion } from "../dev/qemu_binaries.ts";
import { fileURLToPath } from "node:url";
import { lastJson, LineChild } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";
import { qemuAvailable, type QemuDestination, startQemuDestination, startQemuSource } from "./helpers/qemu.ts";
import { requirement } from "./helpers/preconditions.ts";
import { encodeMultifdInit } from "../src/qemu/wire.ts";
import { WorkerPool } from "../src/multifd/worker_pool.ts";
import { Reactor } from "../src/reactor.ts";

const SIZE = 64 * 2 ** 20;
// Whatever a test did, success or failure, no channel Worker may be left running after it
// (an early failure once left the Workers of a pool adopted too late counted forever).
afterEach(() => assert.equal(WorkerPool.running, 0, "channel Workers left running"));
const cli = fileURLToPath(new URL("../examples/migrate.ts", import.meta.url));
const available = qemuAvailable("7.2");

/**
 * QEMU `version` (a `-machine none` guest of SIZE bytes from `seed`) migrates into a
 * QemuMigrationReceiver; `check` gets our result, the output directory and QEMU's RAM.
 */
async function migrateIntoUs(
  version: QemuVersion,
  seed: number,
  options: { channels: number; zerocopy: boolean; idleMs?: number; under?: string },
  check: (result: QemuReceiveResult, dir: string, ram: Uint8Array, receiveSeconds: number) => void,
): Promise<void> {
  const dir = mkdtempSync(join(options.under ?? tmpdir(), `qemu-recv-${version}-`));
  const source = await startQemuSource(version, SIZE, seed, options);
  try {
    const receiver = await QemuMigrationReceiver.listen({ channels: options.channels });
    const called = performance.now();
    const receiving = receiver.receive(dir);
    receiving.catch(() => {});
    // A receiver waits for QEMU for as long as it takes (idleMs: how long this one does).
    await new Promise((resolve) => setTimeout(resolve, options.idleMs ?? 0));
    const status = await source.migrate(receiver.port).catch(async (error) => {
      const ours = await receiving.then(() => "ours ok", (e) => `ours: ${e}`);
      throw new Error(`${error.message} | ${ours}`);
    });
    assert.equal(status.status, "completed");
    const result = await receiving;
    check(result, dir, readFileSync(source.ram), (performance.now() - called) / 1000);
  } finally {
    await source.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What qemu-recv wrote of a QEMU `version` guest, copied into `dir` for sending; resolves with QEMU's RAM. */
async function receivedInto(dir: string, version: QemuVersion, seed: number, channels = 2): Promise<Uint8Array> {
  let ram: Uint8Array | undefined;
  await migrateIntoUs(version, seed, { channels, zerocopy: false }, (_result, received, sourceRam) => {
    ram = sourceRam;
    for (const file of ["mem.ram", "state.bin", "manifest.json"]) cpSync(join(received, file), join(dir, file));
  });
  return ram!;
}

describe("QEMU 7.2 migrates into us (qemu-recv)", () => {
  for (const [channels, zerocopy] of [[1, false], [2, false], [4, false], [2, true], [4, true]] as const) {
    test(
      `${channels} channel${channels > 1 ? "s" : ""}${
        zerocopy ? ", zero-copy-send" : ""
      }: completed, RAM byte-identical`,
      {
        skip: requirement(available === true, `QEMU 7.2 is not available: ${available}`),
      },
      async () => {
        await migrateIntoUs("7.2", 40 + channels, { channels, zerocopy }, (result, dir, ram) => {
          assert.deepEqual(result.blocks.map((b) => [b.name, b.bytes]), [["mem", SIZE]]);
          assert.equal(result.machine, "none");
          assert.equal(result.channels, channels);
          assert.ok(result.zeroPageRecords > 0, "zero pages came as ZERO records on the main channel");
          assert.ok(result.sections >= 2);
          assert.ok(readFileSync(join(dir, "mem.ram")).equals(ram), "the RAM file differs from QEMU's");
          const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
          assert.equal(manifest.streamFormat, "7.2");
          const state = readFileSync(join(dir, "state.bin"));
          assert.equal(state.length, manifest.stateBytes);
          assert.equal(state.subarray(0, 4).toString("latin1"), "QEVM");
          assert.ok(state.includes("globalstate"), "the device sections are kept");
        });
      },
    );
  }
});

describe("QEMU's multifd set-up and ours differ: a clear error, never a hang", () => {
  /**
   * QEMU 7.2 with `qemuChannels` (0: multifd off) migrates into a receiver expecting `ours`;
   * resolves with our error and QEMU's status.
   */
  async function mismatched(qemuChannels: number, ours: number): Promise<{ error: Error; qemu: string }> {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-mismatch-"));
    const source = await startQemuSource("7.2", SIZE, 60 + qemuChannels, { channels: qemuChannels, zerocopy: false });
    try {
      const receiver = await QemuMigrationReceiver.listen({ channels: ours, connectTimeoutMs: 2_000 });
      const receiving = receiver.receive(dir).then(() => new Error("the receive succeeded"), (error: Error) => error);
      const qemu = await source.migrate(receiver.port).then((info) => String(info.status), (e: Error) => e.message);
      return { error: await receiving, qemu };
    } finally {
      await source.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const skip = requirement(available === true, `QEMU 7.2 is not available: ${available}`);

  test("QEMU opens more channels than ours: ProtocolError naming the channel id", { skip }, async () => {
    const { error, qemu } = await mismatched(4, 2);
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match(error.message, /qemu\.init\.id.*channel [23] of 2 \(multifd-channels differ\?\)/);
    assert.doesNotMatch(qemu, /^completed$/);
  });

  test(
    "QEMU opens fewer channels than ours: TimeoutError after connectTimeoutMs, saying how many came",
    { skip },
    async () => {
      const started = performance.now();
      const { error, qemu } = await mismatched(2, 4);
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(
        error.message,
        /2 of 4 multifd channels connected: is QEMU's multifd capability on, with multifd-channels 4\?/,
      );
      assert.ok(performance.now() - started < 60_000);
      assert.doesNotMatch(qemu, /^completed$/);
    },
  );

  /** QemuMigrationSender with `ours` channels into a QEMU 7.2 destination with `qemuChannels` (0: multifd off): our error. */
  async function sendMismatched(ours: number, qemuChannels: number): Promise<Error> {
    const dir = mkdtempSync(join(tmpdir(), "qemu-send-mismatch-"));
    try {
      await receivedInto(dir, "7.2", 70 + ours);
      const destination = await startQemuDestination("7.2", SIZE, qemuChannels);
      try {
        return await QemuMigrationSender.send(dir, {
          hostname: "127.0.0.1",
          port: destination.port,
          channels: ours,
          ioTimeoutMs: 2_000,
        }).then(() => new Error("the send succeeded"), (error: Error) => error);
      } finally {
        await destination.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test(
    "we send more channels than QEMU takes: it resets the extra ones, the send fails at once",
    { skip },
    async () => {
      const started = performance.now();
      const error = await sendMismatched(4, 2);
      assert.ok(error instanceof ChannelFailedError, String(error));
      assert.ok(error.channelId >= 2, `channel ${error.channelId}`);
      assert.match(String(error.code), /^(ECONNRESET|EPIPE)$/);
      assert.ok(performance.now() - started < 30_000);
    },
  );

  test("we send fewer channels than QEMU waits for: it reads nothing more, the send fails after ioTimeoutMs", {
    skip,
  }, async () => {
    const error = await sendMismatched(2, 4);
    const timedOut = error instanceof TimeoutError ||
      (error instanceof ChannelFailedError && error.remote.name === "TimeoutError");
    assert.ok(timedOut, String(error));
  });

  test(
    "QEMU without the multifd capability: the receive times out saying no multifd channel came",
    { skip },
    async () => {
      const { error, qemu } = await mismatched(0, 2);
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(error.message, /0 of 2 multifd channels connected: is QEMU's multifd capability on/);
      assert.doesNotMatch(qemu, /^completed$/);
    },
  );

  test(
    "a destination without the multifd capability: it resets our channels, the send fails at once",
    { skip },
    async () => {
      const error = await sendMismatched(2, 0);
      assert.ok(error instanceof ChannelFailedError, String(error));
      assert.match(String(error.code), /^(ECONNRESET|EPIPE)$/);
    },
  );
});

describe("aborting either end (no QEMU needed: a destination that reads nothing, a source that never comes)", () => {
  /** A directory as qemu-recv writes it (64 MiB of RAM), and a TCP listener that accepts and never reads. */
  async function stalledDestination(): Promise<{ dir: string; port: number; close: () => void }> {
    const dir = mkdtempSync(join(tmpdir(), "qemu-send-abort-"));
    const ram = new Uint8Array(SIZE);
    for (let at = 0; at < SIZE; at += 65536) crypto.getRandomValues(ram.subarray(at, at + 65536));
    writeFileSync(join(dir, "mem.ram"), ram);
    writeFileSync(join(dir, "state.bin"), new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0xfe]));
    const blocks = [{ name: "mem", bytes: SIZE, file: "mem.ram" }];
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ streamFormat: "7.2", blocks, stateHeaderBytes: 8 }));
    const sockets: net.Socket[] = [];
    const server = net.createServer((socket) => (socket.pause(), sockets.push(socket)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const close = () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    };
    return { dir, port: (server.address() as net.AddressInfo).port, close };
  }

  test("the signal ends a stalled send with TransferAbortedError, every channel Worker gone", async () => {
    const { dir, port, close } = await stalledDestination();
    try {
      const controller = new AbortController();
      const sending = QemuMigrationSender.send(dir, {
        hostname: "127.0.0.1",
        port,
        channels: 2,
        signal: controller.signal,
      })
        .then(() => new Error("the send succeeded"), (error: Error) => error);
      await new Promise((resolve) => setTimeout(resolve, 500)); // connected, the sockets' buffers full
      const aborted = performance.now();
      controller.abort("enough");
      const error = await sending;
      assert.ok(error instanceof TransferAbortedError, String(error));
      assert.match(error.message, /aborted by the signal: enough/);
      assert.ok(performance.now() - aborted < 5_000);
      assert.equal(WorkerPool.running, 0);
    } finally {
      close();
    }
  });

  test("a signal aborted already: the send rejects before connecting", async () => {
    const { dir, port, close } = await stalledDestination();
    try {
      const signal = AbortSignal.abort("never mind");
      await assert.rejects(
        QemuMigrationSender.send(dir, { hostname: "127.0.0.1", port, signal }),
        (e: Error) => e instanceof TransferAbortedError && /never mind/.test(e.message),
      );
    } finally {
      close();
    }
  });

  test("migrate.ts qemu-recv: SIGINT while it waits for QEMU ends it, exit 130, no file left", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-sigint-"));
    try {
      const out = join(dir, "state");
      const child = new LineChild(runtimeArgv(cli, ["qemu-recv", "--listen", "127.0.0.1:0", "--out", out]));
      await child.waitFor(/listening on 127\.0\.0\.1:\d+/, "stderr");
      child.process.kill("SIGINT");
      const { code, signal } = await child.exited;
      // Deno's node:child_process reports the signal it sent rather than the exit code 130.
      assert.ok(code === 130 || (code === null && signal === "SIGINT"), `exit ${code} ${signal}: ${child.stderr}`);
      assert.match(child.stderr, /interrupted: migration aborted\n/);
      assert.equal(existsSync(join(out, "manifest.json")), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("migrate.ts qemu-send: SIGINT aborts a stalled send, exit 130", async () => {
    const { dir, port, close } = await stalledDestination();
    try {
      const child = new LineChild(runtimeArgv(cli, ["qemu-send", "--to", `127.0.0.1:${port}`, "--from", dir]));
      await new Promise((resolve) => setTimeout(resolve, 1_500)); // the runtime started, the send stalled
      child.process.kill("SIGINT");
      const { code, signal } = await child.exited;
      // Deno's node:child_process reports the signal it sent rather than the exit code 130.
      assert.ok(code === 130 || (code === null && signal === "SIGINT"), `exit ${code} ${signal}: ${child.stderr}`);
      assert.match(child.stderr, /interrupted: migration aborted\n/);
    } finally {
      close();
    }
  });
});

const available10 = qemuAvailable("10.0");

describe("the receiver's clock", () => {
  test("starts at QEMU's first connection: the wait before it is not in seconds or GB/s", {
    skip: requirement(available === true, `QEMU 7.2 is not available: ${available}`),
  }, async () => {
    const idleMs = 1500;
    await migrateIntoUs("7.2", 47, { channels: 2, zerocopy: false, idleMs }, (result, _dir, _ram, receiveSeconds) => {
      assert.ok(receiveSeconds > idleMs / 1000, "receive() waited for QEMU");
      assert.ok(
        result.seconds < receiveSeconds - idleMs / 1000 + 0.05,
        `seconds ${result.seconds} counts the ${idleMs} ms before QEMU connected (receive took ${receiveSeconds} s)`,
      );
      assert.ok(result.seconds > 0);
      // seconds is rounded to the ms and GB/s to 3 decimals: the rate of any time within half a ms.
      const gb = result.bytes / 1e9;
      const [low, high] = [gb / (result.seconds + 0.0005) - 0.0005, gb / (result.seconds - 0.0005) + 0.0005];
      assert.ok(
        result.GBps >= low && result.GBps <= high,
        `GB/s ${result.GBps} is not bytes / seconds (${result.bytes} B in ${result.seconds} s)`,
      );
    });
  });
});

describe("QEMU 10.0 migrates into us (its per-pass sync, zero pages in multifd packets)", () => {
  for (const [channels, zerocopy] of [[2, false], [4, true]] as const) {
    test(`${channels} channels${zerocopy ? ", zero-copy-send" : ""}: completed, RAM byte-identical`, {
      skip: requirement(available10 === true, `QEMU 10.0 is not available: ${available10}`),
    }, async () => {
      await migrateIntoUs("10.0", 60 + channels, { channels, zerocopy }, (result, dir, ram) => {
        assert.equal(result.streamFormat, "8.1+");
        assert.ok(result.pagesZero > 0, "zero pages came in multifd packets");
        assert.ok(readFileSync(join(dir, "mem.ram")).equals(ram), "the RAM file differs from QEMU's");
      });
    });
  }
});

describe("into a directory on tmpfs: the RAM file is sparse (QEMU's zero pages stay holes)", () => {
  /** Bytes of `ram`'s 4 KiB pages that are not all zero. */
  const dataBytes = (ram: Uint8Array) => {
    let pages = 0;
    for (let at = 0; at < ram.length; at += 4096) if (ram.subarray(at, at + 4096).some((b) => b !== 0)) pages++;
    return pages * 4096;
  };
  for (const version of ["7.2", "10.0"] as const) {
    test(`${version}: byte-identical, and only its pages with data are allocated`, {
      skip: requirement(
        (version === "7.2" ? available : available10) === true,
        `QEMU ${version} is not available: ${version === "7.2" ? available : available10}`,
      ),
    }, async () => {
      await migrateIntoUs(version, 70, { channels: 2, zerocopy: false, under: "/dev/shm" }, (result, dir, ram) => {
        const file = join(dir, "mem.ram");
        // Read with read(2): a read through a mapping would allocate the holes it reads.
        assert.ok(readFileSync(file).equals(ram), "the RAM file differs from QEMU's");
        const allocated = statSync(file).blocks * 512, data = dataBytes(ram);
        assert.ok(data < ram.length - (1 << 20), "the guest has zero stretches");
        assert.ok(
          allocated >= data && allocated <= data + 4096,
          `${allocated} bytes allocated for ${data} bytes of pages with data (${result.pagesZero} zero pages in packets, ` +
            `${result.zeroPageRecords} ZERO records)`,
        );
      });
    });
  }
});

describe("we migrate into QEMU (QemuMigrationSender): a directory received from one QEMU into another", () => {
  // [from, to, format, channels, zero-copy, zero pages as ZERO records]
  const cases: [QemuVersion, QemuVersion, "7.2" | "8.1+", number, boolean, boolean][] = [
    ["7.2", "7.2", "7.2", 2, false, true],
    ["7.2", "7.2", "7.2", 4, true, true],
    ["7.2", "7.2", "7.2", 2, false, false],
    ["7.2", "10.0", "8.1+", 4, false, true],
    ["10.0", "7.2", "7.2", 2, false, true],
  ];
  for (const [from, to, format, channels, zerocopy, zeroPages] of cases) {
    test(
      `${from} → ours → ${to}, ${channels} channels${zerocopy ? ", zero-copy" : ""}${
        zeroPages ? "" : ", zero pages as pages"
      }: completed, RAM byte-identical`,
      {
        skip: requirement(
          available === true && available10 === true,
          `QEMU 7.2 and 10.0 are needed: ${available}, ${available10}`,
        ),
      },
      async () => {
        const dir = mkdtempSync(join(tmpdir(), "qemu-send-"));
        try {
          const ram = await receivedInto(dir, from, 80 + channels, channels);
          const destination = await startQemuDestination(to, SIZE, channels);
          try {
            const sending = QemuMigrationSender.send(dir, {
              hostname: "127.0.0.1",
              port: destination.port,
              channels,
              zerocopy,
              format,
              zeroPages,
            });
            sending.catch(() => {});
            const runState = await destination.completed();
            const sent = await sending;
            assert.equal(sent.pagesNormal + sent.pagesZero, SIZE / 4096, "every page, once");
            if (zeroPages) {
              // The guest's zero stretches went as ZERO records; the destination's RAM held
              // garbage there, so the byte comparison below proves they were applied.
              assert.ok(sent.pagesZero >= 32, `${sent.pagesZero} zero pages`);
              assert.equal(sent.bytes, sent.pagesNormal * 4096);
            } else {
              assert.equal(sent.pagesZero, 0);
              assert.equal(sent.bytes, SIZE);
            }
            assert.equal(sent.sendBufferBytes, SAME_HOST_SEND_BUFFER_BYTES, "the destination is on this host");
            assert.match(runState, /^(paused|prelaunch)$/);
            assert.ok(readFileSync(destination.ram).equals(ram), "the destination's RAM differs from the source's");
          } finally {
            await destination.close();
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  }
});

describe("a -machine pc guest with a running vCPU (SeaBIOS, no disk): several RAM blocks, device state", () => {
  test("7.2 → ours → 7.2: every block received, the destination runs", {
    skip: requirement(available === true, `QEMU 7.2 is not available: ${available}`),
  }, async () => {
    const size = 128 * 2 ** 20;
    const pc = { machine: "pc", paused: false } as const;
    const dir = mkdtempSync(join(tmpdir(), "qemu-pc-"));
    const source = await startQemuSource("7.2", size, 21, { channels: 2, kind: pc });
    try {
      await new Promise((resolve) => setTimeout(resolve, 300)); // SeaBIOS is up and running
      const receiver = await QemuMigrationReceiver.listen({ channels: 2 });
      const receiving = receiver.receive(dir);
      receiving.catch(() => {});
      assert.equal((await source.migrate(receiver.port)).status, "completed");
      const result = await receiving;
      assert.ok(result.blocks.length > 1, JSON.stringify(result.blocks));
      assert.ok(result.blocks.some((b) => b.name === "mem" && b.bytes === size));
      assert.ok(result.blocks.some((b) => b.name === "pc.bios"), "SeaBIOS's block");
      assert.match(result.machine, /^pc-i440fx-/);
      // The source stopped at completion: its RAM is what we must hold.
      assert.ok(readFileSync(join(dir, "mem.ram")).equals(readFileSync(source.ram)), "main RAM differs");
      const destination = await startQemuDestination("7.2", size, 2, pc);
      try {
        await QemuMigrationSender.send(dir, { hostname: "127.0.0.1", port: destination.port, channels: 2 });
        assert.equal(await destination.completed(), "running");
      } finally {
        await destination.close();
      }
    } finally {
      await source.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("migrate.ts qemu-recv and qemu-send", () => {
  test("QEMU 7.2 (4 channels) into the CLI: exit 0, one JSON line, the RAM file byte-identical", {
    skip: requirement(available === true, `QEMU 7.2 is not available: ${available}`),
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-cli-"));
    const source = await startQemuSource("7.2", SIZE, 9, { channels: 4 });
    const child = new LineChild(
      runtimeArgv(cli, ["qemu-recv", "--listen", "127.0.0.1:0", "--out", dir, "--channels", "4", "--json"]),
    );
    try {
      const port = Number((await child.waitFor(/listening on 127\.0\.0\.1:(\d+)/, "stderr"))[1]);
      assert.equal((await source.migrate(port)).status, "completed");
      const { code } = await child.exited;
      assert.equal(code, 0, child.stderr);
      const result = lastJson(child.stdout);
      assert.equal(result.status, "completed");
      assert.equal(result.channels, 4);
      assert.deepEqual(result.blocks.map((b: { name: string }) => b.name), ["mem"]);
      assert.ok(readFileSync(join(dir, "mem.ram")).equals(readFileSync(source.ram)));
    } finally {
      await child.kill();
      await source.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /**
   * `migrate.ts qemu-send --to <a QEMU 7.2 destination of ramBytes, 2 channels> --from <a
   * received 7.2 guest> ...args`; `check` gets the exited child, the destination and the source's RAM.
   */
  async function cliSend(
    seed: number,
    ramBytes: number,
    args: string[],
    check: (
      child: LineChild,
      code: number | null,
      destination: QemuDestination,
      ram: Uint8Array,
    ) => void | Promise<void>,
  ): Promise<void> {
    const dir = mkdtempSync(join(tmpdir(), "qemu-send-cli-"));
    try {
      const ram = await receivedInto(dir, "7.2", seed);
      const destination = await startQemuDestination("7.2", ramBytes, 2);
      try {
        const child = new LineChild(
          runtimeArgv(cli, ["qemu-send", "--to", `127.0.0.1:${destination.port}`, "--from", dir, ...args]),
        );
        await check(child, (await child.exited).code, destination, ram);
      } finally {
        await destination.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const skip = requirement(available === true, `QEMU 7.2 is not available: ${available}`);

  test(
    "qemu-send: a received directory into QEMU 7.2 (2 channels): exit 0, one JSON line, completed",
    { skip },
    () =>
      cliSend(11, SIZE, ["--send-buffer", "512K", "--json"], async (child, code, destination, ram) => {
        assert.equal(code, 0, child.stderr);
        const result = lastJson(child.stdout);
        assert.equal(result.status, "sent");
        assert.equal(result.sendBufferBytes, 512 * 1024);
        assert.ok(result.cpuSeconds > 0, "the JSON says what the send cost");
        await destination.completed();
        assert.ok(readFileSync(destination.ram).equals(ram));
      }),
  );

  test(
    "qemu-send with more channels than the destination's: exit 1, the error asks about multifd-channels",
    { skip },
    () =>
      cliSend(12, SIZE, ["--channels", "4"], (child, code) => {
        assert.equal(code, 1, child.stderr);
        assert.match(
          child.stderr,
          /multifd capability on, with multifd-channels 4\? QEMU resets the connections it does not/,
        );
      }),
  );

  test("qemu-send into a destination with RAM of another size: exit 1, the error says the destination ended it", {
    skip,
  }, () =>
    cliSend(13, SIZE * 2, [], async (child, code, destination) => {
      assert.equal(code, 1, child.stderr);
      assert.match(child.stderr, /the destination ended the migration: its query-migrate error-desc says why/);
      await assert.rejects(destination.completed(), /Size mismatch/);
    }));

  test("bad command lines exit 2 with the usage", {}, async () => {
    for (
      const args of [
        ["qemu-recv"],
        ["qemu-recv", "--listen", "127.0.0.1:0"],
        ["qemu-recv", "--out", "x", "--listen", "127.0.0.1:0", "--channels", "0"],
        ["qemu-send", "--to", "127.0.0.1:1"],
        ["qemu-send", "--to", "127.0.0.1:1", "--from", "d", "--format", "9"],
        ["qemu-send", "--to", "127.0.0.1:1", "--from", "d", "--send-buffer", "1"],
        ["qemu-send", "--to", "127.0.0.1:1", "--from", "d", "--send-buffer", "lots"],
      ]
    ) {
      const child = new LineChild(runtimeArgv(cli, args));
      const { code } = await child.exited;
      assert.equal(code, 2, args.join(" "));
      assert.match(child.stderr, new RegExp(`usage: migrate.ts ${args[0]}`));
    }
  });
});

describe("qemu-recv against strangers (no QEMU needed)", () => {
  test("listen() resolves with the channel Workers ready; close() ends them, and no receive follows", async () => {
    const receiver = await QemuMigrationReceiver.listen({ channels: 3 });
    // Ready before QEMU connects (as QEMU's -incoming is): a migration started now waits for none to start.
    assert.equal(WorkerPool.running, 3);
    assert.equal(Reactor.shared.running, true, "the reactor too, which the accepts and the main channel wait through");
    await receiver.close();
    assert.equal(WorkerPool.running, 0);
    await assert.rejects(receiver.receive(tmpdir()), ChannelClosedError);
    const refused = await new Promise<boolean>((resolve) => {
      const socket = net.connect(receiver.port, "127.0.0.1", () => (socket.destroy(), resolve(false)));
      socket.on("error", () => resolve(true));
    });
    assert.ok(refused, "the listener is closed");
    const aborted = await QemuMigrationReceiver.listen({ channels: 1 });
    await aborted.abort("not wanted");
    assert.equal(WorkerPool.running, 0);
    await assert.rejects(aborted.receive(tmpdir()), TransferAbortedError);
  });

  test("a second receive() is refused while the first runs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-twice-"));
    const receiver = await QemuMigrationReceiver.listen({ channels: 1 });
    const receiving = receiver.receive(dir);
    receiving.catch(() => {});
    await assert.rejects(receiver.receive(dir), InvalidArgumentError);
    await receiver.abort("test over");
    await assert.rejects(receiving, TransferAbortedError);
    rmSync(dir, { recursive: true, force: true });
  });

  test("a connection that is neither QEMU channel fails the receive with a ProtocolError", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-stranger-"));
    const receiver = await QemuMigrationReceiver.listen({ channels: 2 });
    const receiving = receiver.receive(dir);
    receiving.catch(() => {});
    const socket = net.connect(receiver.port, "127.0.0.1", () => socket.write("GET / HTTP/1.0\r\n\r\n"));
    socket.on("error", () => {});
    await assert.rejects(receiving, (e: Error) => e instanceof ProtocolError && /qemu\.channel/.test(e.message));
    socket.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a connection that says nothing holds the receiver for connectTimeoutMs at most (TimeoutError)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-silent-"));
    const receiver = await QemuMigrationReceiver.listen({ channels: 2, connectTimeoutMs: 300 });
    const receiving = receiver.receive(dir);
    receiving.catch(() => {});
    const socket = net.connect(receiver.port, "127.0.0.1");
    socket.on("error", () => {});
    const started = performance.now();
    await assert.rejects(receiving, TimeoutError);
    assert.ok(performance.now() - started < 5_000);
    socket.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A fake QEMU opens the main channel and both multifd channels of a 2-channel receive (and
   * sends nothing more), then one more connection per entry of `late` sends it (empty: says
   * nothing); resolves with how the receive ended after `settleMs`, or "running" (then aborted).
   */
  async function afterQemuConnected(late: Uint8Array[], settleMs: number): Promise<Error | "running"> {
    const dir = mkdtempSync(join(tmpdir(), "qemu-recv-late-"));
    const receiver = await QemuMigrationReceiver.listen({ channels: 2 });
    const receiving = receiver.receive(dir).then(() => new Error("the receive succeeded"), (error: Error) => error);
    const sockets: net.Socket[] = [];
    const open = (bytes: Uint8Array) =>
      new Promise<void>((resolve) => {
        const socket = net.connect(receiver.port, "127.0.0.1", () => socket.write(bytes, () => resolve()));
        socket.on("error", () => resolve()); // refused: the receive's outcome tells
        sockets.push(socket);
      });
    try {
      await open(new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3])); // "QEVM", version 3
      await open(encodeMultifdInit(0));
      await open(encodeMultifdInit(1));
      await new Promise((resolve) => setTimeout(resolve, 200)); // all three accepted
      for (const bytes of late) await open(bytes);
      const ended = await Promise.race([
        receiving,
        new Promise<"running">((r) => setTimeout(() => r("running"), settleMs)),
      ]);
      if (ended === "running") {
        await receiver.abort("test over");
        const aborted = await receiving;
        assert.ok(aborted instanceof TransferAbortedError, String(aborted));
      }
      return ended;
    } finally {
      for (const socket of sockets) socket.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test("after QEMU's channels, a stranger's connection is closed and the receive goes on", async () => {
    assert.equal(await afterQemuConnected([new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n")], 500), "running");
  });

  test("after QEMU's channels, a multifd opening beyond them fails the receive at once (qemu.init.id)", async () => {
    const started = performance.now();
    const ended = await afterQemuConnected([encodeMultifdInit(2)], 2_500);
    assert.ok(ended instanceof ProtocolError, String(ended));
    assert.match(ended.message, /qemu\.init\.id.*channel 2 of 2 \(multifd-channels differ\?\)/);
    assert.ok(performance.now() - started < 4_000);
  });

  test("a late connection that says nothing is dropped after 2 s: a multifd opening behind it still fails the receive", async () => {
    const started = performance.now();
    const ended = await afterQemuConnected([new Uint8Array(0), encodeMultifdInit(2)], 6_000);
    const seconds = (performance.now() - started) / 1000;
    assert.ok(ended instanceof ProtocolError, String(ended));
    assert.match(ended.message, /qemu\.init\.id/);
    assert.ok(seconds > 1.9 && seconds < 5, `the silent connection held the late-channel check ${seconds} s`);
  });

  test("a source that keeps its multifd channels open after its stream's end: the receive ends with the stream", async () => {
    // Ours as the source, through a relay that passes the main channel's end on but holds the
    // multifd connections open, as a QEMU source does until its clean-up. The receive must not
    // wait for those (before: until ioTimeoutMs).
    const source = madeUpSource("7.2");
    const into = mkdtempSync(join(tmpdir(), "qemu-open-channels-into-"));
    const receiver = await QemuMigrationReceiver.listen({ channels: 2, ioTimeoutMs: 60_000 });
    const relay = await Relay.start(receiver.port);
    try {
      const receiving = receiver.receive(into);
      receiving.catch(() => {});
      await QemuMigrationSender.send(source.dir, { hostname: "127.0.0.1", port: relay.port, channels: 2 });
      const result = await within(10_000, receiving, "the receive waited for the multifd channels to close");
      assert.equal(result.streamFormat, "7.2");
      assert.deepEqual(readFileSync(join(into, "mem.ram")), Buffer.from(source.ram));
      assert.deepEqual(readFileSync(join(into, "state.bin")), Buffer.from(source.state));
    } finally {
      relay.close();
      await receiver.abort("test over").catch(() => {});
      rmSync(source.dir, { recursive: true, force: true });
      rmSync(into, { recursive: true, force: true });
    }
  });

  test("a stream that ends without matching its channels' last SYNC: ProtocolError at its end, not a wait for ioTimeoutMs", async () => {
    // QEMU ≥ 8.1's format syncs at MULTIFD_FLUSH; the relay takes the END section's flush out
    // of the main stream, so every channel waits at a sync the stream never matches.
    const source = madeUpSource("8.1+");
    const into = mkdtempSync(join(tmpdir(), "qemu-unmatched-sync-into-"));
    const receiver = await QemuMigrationReceiver.listen({ channels: 2, ioTimeoutMs: 60_000 });
    const flushThenEos = Uint8Array.from([0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    const relay = await Relay.start(receiver.port, (stream) => {
      const at = lastIndexOf(stream, flushThenEos);
      assert.ok(at > 0, "the END section's MULTIFD_FLUSH");
      return Buffer.concat([stream.subarray(0, at), stream.subarray(at + 8)]);
    });
    try {
      const receiving = receiver.receive(into);
      receiving.catch(() => {});
      await QemuMigrationSender.send(source.dir, { hostname: "127.0.0.1", port: relay.port, channels: 2 });
      await assert.rejects(
        within(10_000, receiving, "the receive waited at the unmatched sync"),
        (e: Error) => e instanceof ProtocolError && /qemu\.sync/.test(e.message),
      );
      assert.equal(existsSync(join(into, "manifest.json")), false, "a failed receive writes no manifest");
    } finally {
      relay.close();
      await receiver.abort("test over").catch(() => {});
      rmSync(source.dir, { recursive: true, force: true });
      rmSync(into, { recursive: true, force: true });
    }
  });
});

/** A directory as qemu-recv writes it, made up: one 96-page block "mem" and a little device state. */
function madeUpSource(format: "7.2" | "8.1+") {
  const dir = mkdtempSync(join(tmpdir(), "qemu-made-up-"));
  const ram = Uint8Array.from({ length: 96 * 4096 }, (_, i) => (i * 131 + (i >> 12)) & 0xff);
  // "QEVM", file version 3, then the configuration section: its length and the machine type.
  const head = Uint8Array.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x07, 0, 0, 0, 4, ...Buffer.from("none")]);
  const state = Uint8Array.from([...head, 0x04, 1, 2, 3]); // then device state: opaque to both ends
  writeFileSync(join(dir, "mem.ram"), ram);
  writeFileSync(join(dir, "state.bin"), state);
  const blocks = [{ name: "mem", bytes: ram.length, file: "mem.ram" }];
  writeFileSync(
    join(dir, "manifest.json"),
    JSON.stringify({ streamFormat: format, blocks, stateHeaderBytes: head.length }),
  );
  return { dir, ram, state };
}

/**
 * A TCP relay in front of a receiver: passes every connection through, but never passes a
 * multifd connection's end on (as a QEMU source keeps its channels open until its clean-up);
 * the main channel (the one opening with "QEVM") is passed on whole at its end, through
 * `rewrite` when given.
 */
class Relay {
  readonly #server: net.Server;
  readonly #sockets: net.Socket[] = [];

  private constructor(server: net.Server) {
    this.#server = server;
  }

  static async start(target: number, rewrite?: (stream: Buffer) => Buffer): Promise<Relay> {
    const server = net.createServer();
    const relay = new Relay(server);
    server.on("connection", (incoming) => {
      const outgoing = net.connect(target, "127.0.0.1");
      relay.#sockets.push(incoming, outgoing);
      let main: boolean | undefined;
      const held: Buffer[] = [];
      incoming.on("data", (chunk: Buffer) => {
        main ??= chunk.subarray(0, 4).toString("latin1") === "QEVM";
        if (main && rewrite) held.push(chunk);
        else outgoing.write(chunk);
      });
      incoming.on("end", () => {
        if (!main) return;
        if (rewrite) outgoing.write(rewrite(Buffer.concat(held)));
        outgoing.end();
      });
      outgoing.on("data", (chunk: Buffer) => incoming.write(chunk));
      for (const socket of [incoming, outgoing]) socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return relay;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  close(): void {
    for (const socket of this.#sockets) socket.destroy();
    this.#server.close();
  }
}

/** `promise`, or a rejection with `message` after `ms`. */
async function within<T>(ms: number, promise: Promise<T>, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error(message)), ms));
  return await Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function lastIndexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let at = haystack.length - needle.length; at >= 0; at--) {
    for (let i = 0; i < needle.length; i++) if (haystack[at + i] !== needle[i]) continue outer;
    return at;
  }
  return -1;
}
