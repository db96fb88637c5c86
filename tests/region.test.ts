// Region holds: close() waits for every transfer holding the region, a release without a
// hold is refused (an in-use count below zero would let a later close() unmap memory a
// transfer still uses), and an abandoned hold — a Worker that never confirmed it let go —
// keeps the mapping for good. File regions: populated per packet in memory, not on a disk;
// a file system that cannot hold the output fails typed, never with SIGBUS, reserved or
// sparse; sparse files keep their holes as outputs and are sent without reading them.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from "node:fs";
import { InvalidArgumentError, MultifdReceiver, MultifdSender, Region, SystemError } from "../mod.ts";
import { sameBytes } from "../util/bytes.ts";
import { fillPattern, SECRET, transfer } from "./helpers/multifd.ts";
import { patternBytes } from "./helpers/pattern.ts";
import { isRoot, requirement } from "./helpers/preconditions.ts";

describe("Region holds", () => {
  test("close() waits for the last release; a release without a hold is refused", async () => {
    const region = Region.allocate(8192);
    region.retain();
    region.retain();
    let closed = false;
    const closing = region.close().then(() => (closed = true));
    region.release();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(closed, false, "closed while a transfer still held it");
    assert.equal(region.inUse, 1);
    region.release();
    await closing;
    assert.equal(region.inUse, 0);
    assert.throws(() => region.release(), InvalidArgumentError);
  });

  test("an abandoned hold: close() completes but never unmaps", async () => {
    const region = Region.allocate(8192);
    region.view(0, 8192).fill(0xa5);
    const borrowed = Region.fromDescriptor(region.descriptor);
    region.retain();
    region.abandon();
    await region.close();
    assert.equal(region.closed, true);
    assert.equal(region.inUse, 0);
    // Still mapped: reading it through a region that borrows the address does not fault
    // (an unmapped page would kill this process with SIGSEGV).
    assert.equal(borrowed.view(4096, 1)[0], 0xa5);
  });
});

describe("file regions on a disk", () => {
  test("are not populated per packet (the faults' readahead keeps the disk busy)", async () => {
    const dir = mkdtempSync("/var/tmp/zcmf-");
    try {
      const created = Region.createFile(`${dir}/out.bin`, 8192);
      assert.equal(created.descriptor.populate, false);
      await created.close();
      const opened = Region.openFile(`${dir}/out.bin`);
      assert.equal(opened.descriptor.populate, false);
      await opened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("file regions in memory (tmpfs)", () => {
  test("are populated packet by packet; a transfer between two of them is exact", async () => {
    const dir = mkdtempSync("/dev/shm/zcmf-");
    try {
      const size = (16 << 20) + 4096 * 3 + 5;
      const source = Region.createFile(`${dir}/in.bin`, size);
      fillPattern(source, 21);
      const destination = Region.createFile(`${dir}/out.bin`, size);
      assert.equal(source.descriptor.populate, true, "a tmpfs file is populated per packet");
      assert.equal(Region.allocate(4096).descriptor.populate, false, "anonymous memory is not");
      const { sent, received } = await transfer(source, { destination, sender: { channels: 3, pagesPerPacket: 7 } });
      assert.equal(sent.verified, true);
      assert.equal(received.verified, true);
      assert.ok(destination.equals(source));
      await source.close();
      await destination.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Runs `body` with a directory on a fresh tmpfs of `megabytes` (needs root), unmounted after. */
async function onSmallTmpfs(megabytes: number, body: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync("/tmp/zcmf-full-");
  const mount = (args: string[]) => execFileSync(args[0], args.slice(1), { stdio: "ignore" });
  mount(["mount", "-t", "tmpfs", "-o", `size=${megabytes}m`, "tmpfs", dir]);
  try {
    await body(dir);
  } finally {
    mount(["umount", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Takes every page left on `dir`'s file system, with a file of its own. */
function fillUp(dir: string): void {
  const filler = openSync(`${dir}/filler.bin`, "w");
  try {
    for (;;) writeSync(filler, new Uint8Array(4096));
  } catch (error) {
    assert.equal((error as { code?: string }).code, "ENOSPC");
  } finally {
    closeSync(filler);
  }
}

const needsRoot = { skip: requirement(isRoot, "mounting a small tmpfs needs root") };

describe("a file output its file system cannot hold", () => {
  test(
    "SystemError ENOSPC when the file is created (reserved up front: never a SIGBUS in the middle of a transfer)",
    needsRoot,
    () =>
      onSmallTmpfs(1, async (dir) => {
        assert.throws(
          () => Region.createFile(`${dir}/out.bin`, 4 << 20),
          (error) => error instanceof SystemError && error.code === "ENOSPC" && /fallocate/.test(error.message),
        );
        const fits = Region.createFile(`${dir}/small.bin`, 512 << 10); // the space is still there to use
        fits.view().fill(7);
        await fits.close();
      }),
  );

  test(
    "sparse: the free space is checked up front (ENOSPC), but no page is reserved",
    needsRoot,
    () =>
      onSmallTmpfs(8, async (dir) => {
        assert.throws(
          () => Region.createFile(`${dir}/out.bin`, 16 << 20, { sparse: true }),
          (error) => error instanceof SystemError && error.code === "ENOSPC" && /bytes free/.test(error.message),
        );
        const region = Region.createFile(`${dir}/out.bin`, 6 << 20, { sparse: true });
        try {
          // One page backed (the check that the kernel can populate), not 6 MiB.
          assert.ok(statSync(`${dir}/out.bin`).blocks * 512 <= 64 << 10, "the file's space was reserved");
          assert.equal(statSync(`${dir}/out.bin`).size, 6 << 20);
          assert.equal(region.view(0, 1 << 20).every((byte) => byte === 0), true);
        } finally {
          await region.close();
        }
      }),
  );

  // A sparse file whose file system another file filled after it was created: the receive
  // fails with SystemError on the page that cannot be backed, and the process lives on (no
  // SIGBUS): pages with data (received by the kernel's copy) and sealed pages (opened into
  // place by the AEAD) alike.
  for (
    const { name, encrypt } of [{ name: "pages with data", encrypt: false }, { name: "sealed pages", encrypt: true }]
  ) {
    test(
      `sparse, its file system filled meanwhile: ${name} fail the receive with SystemError`,
      needsRoot,
      () =>
        onSmallTmpfs(8, async (dir) => {
          const size = 6 << 20;
          const destination = Region.createFile(`${dir}/out.bin`, size, { sparse: true });
          fillUp(dir);
          const source = Region.allocate(size);
          fillPattern(source, 31);
          try {
            const failure = await sendInto(destination, source, encrypt).then(() => undefined, (error: Error) => error);
            assert.ok(failure, "the receive succeeded into a full file system");
            const remote = (failure as { remote?: { name: string; message: string } }).remote ?? failure;
            assert.equal(remote.name, "SystemError", `${failure.name}: ${failure.message}`);
            assert.match(remote.message, /could not be allocated: is its file system full/);
          } finally {
            await source.close();
            await destination.close();
          }
        }),
    );
  }

  test(
    "sparse, its file system filled meanwhile: write() and writable() throw SystemError, never SIGBUS",
    needsRoot,
    () =>
      onSmallTmpfs(8, async (dir) => {
        const region = Region.createFile(`${dir}/out.bin`, 6 << 20, { sparse: true });
        fillUp(dir);
        try {
          region.write(0, new Uint8Array(4096).fill(1)); // page 0 is backed since the creation
          const full = (error: unknown) =>
            error instanceof SystemError && /could not be allocated: is its file system full/.test(error.message);
          assert.throws(() => region.write(4 << 20, new Uint8Array(4096).fill(2)), full);
          assert.throws(() => region.writable(3 << 20, 2 << 20), full);
        } finally {
          await region.close();
        }
      }),
  );

  test(
    "sparse, its file system filled meanwhile: zero pages stay holes, the receive is verified",
    needsRoot,
    () =>
      onSmallTmpfs(8, async (dir) => {
        const size = 6 << 20;
        const destination = Region.createFile(`${dir}/out.bin`, size, { sparse: true });
        fillUp(dir);
        const source = Region.allocate(size);
        try {
          assert.equal((await sendInto(destination, source, false)).verified, true);
          // Read back with read(2), which leaves holes unallocated (a read through the mapping would not).
          assert.ok(sameBytes(readFileSync(`${dir}/out.bin`), source.view()));
          assert.ok(statSync(`${dir}/out.bin`).blocks * 512 <= 64 << 10, "zero pages were written");
        } finally {
          await source.close();
          await destination.close();
        }
      }),
  );
});

describe("a sparse file as the source (tmpfs)", () => {
  // A file with holes on a full tmpfs, opened to send: its holes go as zero pages and are
  // hashed as zeros without a read through the mapping (which would allocate them, and on a
  // full file system raise SIGBUS).
  for (const encrypt of [false, true]) {
    test(
      `its holes are zero pages never read: exact, verified, the file still sparse (${encrypt ? "sealed" : "plain"})`,
      needsRoot,
      () =>
        onSmallTmpfs(4, async (dir) => {
          const file = `${dir}/in.bin`;
          const data = patternBytes(256 << 10, 5);
          const fd = openSync(file, "w");
          writeSync(fd, data, 0, data.length, 1 << 20); // data at 1 MiB; holes before and after, to 8 MiB
          ftruncateSync(fd, 8 << 20);
          closeSync(fd);
          fillUp(dir);
          const allocated = statSync(file).blocks;
          const source = Region.openFile(file);
          const destination = Region.allocate(source.size);
          try {
            assert.equal((await sendInto(destination, source, encrypt)).verified, true);
            const expected = new Uint8Array(8 << 20);
            expected.set(data, 1 << 20);
            assert.ok(sameBytes(destination.view(), expected));
            assert.equal(statSync(file).blocks, allocated, "the source's holes were allocated");
          } finally {
            await source.close();
            await destination.close();
          }
        }),
    );
  }
});

describe("a sparse file output (tmpfs)", () => {
  // 8 MiB: data in its first MiB and in every 16th page after it; zeros elsewhere. A second
  // round zeroes pages that held data (they must be zeroed: they are no holes any more).
  for (const encrypt of [false, true]) {
    test(`zero pages stay holes, pages zeroed later are zeroed; exact and verified (${encrypt ? "sealed" : "plain"})`, async () => {
      const dir = mkdtempSync("/dev/shm/zcmf-sparse-");
      const file = `${dir}/out.bin`;
      const pages = 2048;
      const source = Region.allocate(pages * 4096);
      const destination = Region.createFile(file, source.size, { sparse: true });
      try {
        const withData = [...Array(pages).keys()].filter((page) => page < 256 || page % 16 === 0);
        for (const page of withData) source.write(page * 4096, patternBytes(4096, page));
        const zeroedLater = withData.filter((page) => page % 3 === 0);
        const result = await sendInto(destination, source, encrypt, () => {
          for (const page of zeroedLater) source.view(page * 4096, 4096).fill(0);
          return zeroedLater;
        });
        assert.equal(result.verified, true);
        assert.ok(sameBytes(readFileSync(file), source.view()));
        const blocks = statSync(file).blocks * 512;
        assert.ok(
          blocks <= withData.length * 4096 + (64 << 10),
          `${blocks} bytes allocated for ${withData.length} pages of data`,
        );
      } finally {
        await source.close();
        await destination.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

/** Sends `source` into `destination` over loopback (a second round of `secondRound()`'s pages, if given). */
async function sendInto(
  destination: Region,
  source: Region,
  encrypt: boolean,
  secondRound?: () => number[],
): Promise<{ verified: boolean }> {
  const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 5_000 });
  const receiving = receiver.receive(destination);
  receiving.catch(() => {});
  const sending = (async () => {
    const sender = await MultifdSender.connect(source, {
      hostname: "127.0.0.1",
      port: receiver.port,
      secret: SECRET,
      encrypt,
      ioTimeoutMs: 5_000,
    });
    try {
      await sender.sendRound();
      if (secondRound) await sender.sendRound(secondRound());
      await sender.finish();
    } finally {
      await sender.abort();
    }
  })();
  sending.catch(() => {});
  const received = await receiving;
  await sending;
  return received;
}
