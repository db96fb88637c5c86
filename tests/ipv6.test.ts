// Multifd over IPv6 loopback (::1): both ends listen and connect by an IPv6 address.
// Skipped only where ::1 is missing; in CI (where it exists) a missing ::1 fails instead.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { listen, Region } from "../mod.ts";
import { fillPattern, transfer } from "./helpers/multifd.ts";
import { requirement } from "./helpers/preconditions.ts";

const ipv6 = await listen({ hostname: "::1", port: 0 }).then((l) => (l.close(), true), () => false);

describe("IPv6", { skip: requirement(ipv6, "::1 is not available on this host") }, () => {
  test("a zero-copy multifd transfer over ::1", async () => {
    const size = (8 << 20) + 555;
    const source = Region.allocate(size);
    fillPattern(source, 46);
    const { sent, received, destination } = await transfer(source, {
      receiver: { hostname: "::1" },
      sender: { channels: 2, zerocopy: true },
    });
    assert.equal(sent.verified, true);
    assert.equal(received.verified, true);
    assert.ok(sent.zerocopySends > 0);
    assert.equal(received.bytes, size);
    assert.ok(destination.equals(source), "bytes differ");
    await destination.close();
    await source.close();
  });
});
