/**
 * A receiver in its own process, for the connection-flood tests: prints "PORT n", then
 * answers each "rss" line on stdin with "RSS <bytes>" (after a full garbage collection)
 * and each "fds" line with "FDS <open fds>", receives one transfer of SIZE bytes
 * (argv[2]) and prints its result as a JSON line.
 */
import process from "node:process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { MultifdReceiver, Region } from "../../mod.ts";
import { fillPattern, SECRET } from "./multifd.ts";
import { collectGarbage } from "../../dev/runtime.ts";

const size = Number(process.argv[2]);
const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 2_000 });
console.log(`PORT ${receiver.port}`);

const pageBytes = 4096;
const rss = () => Number(readFileSync("/proc/self/statm", "utf8").split(" ")[1]) * pageBytes;
const input = createInterface({ input: process.stdin });
input.on("line", async (line) => {
  if (line === "fds") console.log(`FDS ${readdirSync("/proc/self/fd").length}`);
  if (line !== "rss") return;
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.log(`RSS ${rss()}`);
});

const destination = Region.allocate(size);
const result = await receiver.receive(destination);
const expected = Region.allocate(size);
fillPattern(expected, 9);
console.log(JSON.stringify({
  verified: result.verified,
  equal: destination.equals(expected),
  rejectedConnections: result.rejectedConnections,
  acceptRetries: result.acceptRetries,
}));
input.close();
await destination.close();
await expected.close();
