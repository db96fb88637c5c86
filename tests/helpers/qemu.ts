/**
 * A real QEMU as a migration source, for the QEMU interop tests: `-machine none` with its RAM
 * in a `memory-backend-file` (a file on /dev/shm the test fills), paused (`-S`), driven over
 * QMP: multifd on, N channels, zero-copy-send if asked, `migrate` to our receiver.
 * ../shared/qemu72-wire.md (the facts of QEMU 7.2's format) describes what it sends.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { LineChild } from "../../dev/child.ts";
import { Qmp } from "../../dev/qmp.ts";
import { freePort } from "../../dev/ports.ts";
import { bareGuestArgv, ensureQemuBinary, type GuestKind, type QemuVersion } from "../../dev/qemu_binaries.ts";
import { Region } from "../../mod.ts";
import { fillPattern } from "./multifd.ts";

/** Whether QEMU `version` can run here (CI installs it: there every QEMU test must run). */
export function qemuAvailable(version: QemuVersion): string | true {
  const binary = ensureQemuBinary(version);
  return typeof binary === "string" ? binary : true;
}

/** A RAM image with random runs, zero pages (some not, some already zero), a short pattern: what a guest holds. */
export async function guestRam(path: string, size: number, seed: number): Promise<void> {
  const ram = Region.createFile(path, size);
  fillPattern(ram, seed);
  // Zero stretches: QEMU sends them as ZERO records on the main channel.
  for (let at = 8 * 4096; at + 32 * 4096 <= size; at += 1024 * 4096) ram.view(at, 32 * 4096).fill(0);
  ram.view(size - 4096, 4096).fill(0xab);
  ram.sync();
  await ram.close();
}

export interface QemuSource {
  ram: string;
  migrate(port: number): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

/**
 * Starts QEMU `version` paused with `size` bytes of RAM from `seed` (see {@link guestRam}),
 * multifd on with `channels` channels (0: the multifd capability off).
 */
export async function startQemuSource(
  version: QemuVersion,
  size: number,
  seed: number,
  options: { channels: number; zerocopy?: boolean; kind?: GuestKind },
): Promise<QemuSource> {
  const binary = ensureQemuBinary(version);
  if (typeof binary === "string") throw new Error(`QEMU ${version}: ${binary}`);
  const work = mkdtempSync("/dev/shm/zc-qemu-test-");
  const ram = join(work, "ram.img");
  await guestRam(ram, size, seed);
  const qmpPath = join(work, "qmp.sock");
  const child = new LineChild([
    ...bareGuestArgv(binary, ram, size, qmpPath, "", options.kind),
    ...(options.zerocopy ? ["-overcommit", "mem-lock=on"] : []),
  ], { label: `qemu ${version} source`, env: binary.env });
  let qmp: Qmp | undefined;
  try {
    qmp = await Qmp.connect(qmpPath, child);
    await qmp.command("migrate-set-capabilities", {
      capabilities: [
        { capability: "events", state: true },
        { capability: "multifd", state: options.channels > 0 },
        ...(options.zerocopy ? [{ capability: "zero-copy-send", state: true }] : []),
      ],
    });
    // QEMU throttles to 128 MiB/s unless told otherwise (max-bandwidth), as bench/qemu.ts does.
    await qmp.command("migrate-set-parameters", {
      ...(options.channels > 0 && { "multifd-channels": options.channels }),
      "max-bandwidth": 100e9,
      "downtime-limit": 300_000,
    });
  } catch (error) {
    qmp?.close();
    await child.kill();
    rmSync(work, { recursive: true, force: true });
    throw error;
  }
  const control = qmp;
  return {
    ram,
    async migrate(port) {
      await control.command("migrate", { uri: `tcp:127.0.0.1:${port}` });
      try {
        await control.migrationCompleted(120_000);
      } catch (error) {
        const info: Record<string, unknown> = await control.command<Record<string, unknown>>("query-migrate")
          .catch(() => ({}));
        throw new Error(
          `${(error as Error).message}: ${info["error-desc"] ?? "no error-desc"}; ${child.stderr.slice(-300)}`,
        );
      }
      return await control.command<Record<string, unknown>>("query-migrate");
    },
    async close() {
      control.close();
      await child.kill();
      rmSync(work, { recursive: true, force: true });
    },
  };
}

export interface QemuDestination {
  /** The port its `migrate-incoming` listens on. */
  port: number;
  ram: string;
  /** Waits for `completed` and returns `query-status`'s run state. */
  completed(): Promise<string>;
  close(): Promise<void>;
}

/**
 * Starts QEMU `version` as a migration destination (`-incoming defer`) whose RAM file holds
 * garbage first, multifd on with `channels` channels (0: the multifd capability off).
 */
export async function startQemuDestination(
  version: QemuVersion,
  size: number,
  channels: number,
  kind: GuestKind = {},
): Promise<QemuDestination> {
  const binary = ensureQemuBinary(version);
  if (typeof binary === "string") throw new Error(`QEMU ${version}: ${binary}`);
  const work = mkdtempSync("/dev/shm/zc-qemu-dst-");
  const ram = join(work, "ram.img");
  await guestRam(ram, size, 999); // not the source's: every page must be overwritten
  const qmpPath = join(work, "qmp.sock");
  const child = new LineChild([...bareGuestArgv(binary, ram, size, qmpPath, "", kind), "-incoming", "defer"], {
    label: `qemu ${version} destination`,
    env: binary.env,
  });
  let qmp: Qmp | undefined;
  try {
    qmp = await Qmp.connect(qmpPath, child);
    await qmp.command("migrate-set-capabilities", {
      capabilities: [{ capability: "events", state: true }, { capability: "multifd", state: channels > 0 }],
    });
    if (channels > 0) await qmp.command("migrate-set-parameters", { "multifd-channels": channels });
    const port = await freePort();
    await qmp.command("migrate-incoming", { uri: `tcp:127.0.0.1:${port}` });
    const control = qmp;
    return {
      port,
      ram,
      async completed() {
        try {
          await control.migrationCompleted(120_000);
        } catch (error) {
          throw new Error(`${(error as Error).message}; ${child.stderr.slice(-400)}`);
        }
        return (await control.command<{ status: string }>("query-status")).status;
      },
      async close() {
        control.close();
        await child.kill();
        rmSync(work, { recursive: true, force: true });
      },
    };
  } catch (error) {
    qmp?.close();
    await child.kill();
    rmSync(work, { recursive: true, force: true });
    throw error;
  }
}
