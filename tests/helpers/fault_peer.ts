/**
 * One end of a long multifd transfer for fault tests (run inside a network namespace).
 *   recv HOST            prints "PORT <n>", receives
 *   send HOST PORT       sends many rounds; prints "PROGRESS" once data flows
 * Options come as JSON in $ZCMF_FAULT_OPTIONS (channel timeouts, channels, zerocopy,
 * roundPages, rounds; pauseFile: after the first round, print "PAUSED" and wait for it).
 * Always ends with one JSON line: {"ok":true,...} (exit 0) or {"ok":false,"error":...} (exit 1).
 */
import { existsSync } from "node:fs";
import process from "node:process";
import { MultifdReceiver, MultifdSender, Region } from "../../mod.ts";
import { fillPattern, SECRET } from "./multifd.ts";

const options = JSON.parse(process.env.ZCMF_FAULT_OPTIONS ?? "{}");
const [mode, host, port] = process.argv.slice(2);
const SIZE = 64 << 20;

async function receive() {
  const receiver = await MultifdReceiver.listen({ hostname: host, secret: SECRET, ...options.channel });
  console.log(`PORT ${receiver.port}`);
  const destination = Region.allocate(SIZE);
  const result = await receiver.receive(destination);
  return { verified: result.verified, rounds: result.rounds };
}

async function send() {
  const source = Region.allocate(SIZE);
  fillPattern(source, 3);
  const sender = await MultifdSender.connect(source, {
    hostname: host,
    port: Number(port),
    secret: SECRET,
    channels: options.channels ?? 4,
    zerocopy: options.zerocopy ?? false,
    ...options.channel,
  });
  const roundPages = options.roundPages ? Array.from({ length: options.roundPages }, (_, i) => i) : undefined;
  let announced = false;
  for (let round = 0; round < (options.rounds ?? 200); round++) {
    await sender.sendRound(round === 0 ? undefined : roundPages);
    if (!announced) console.log("PROGRESS"), (announced = true);
    if (round === 0 && options.pauseFile) {
      // Idle between rounds until the test has set up its fault.
      console.log("PAUSED");
      while (!existsSync(options.pauseFile)) await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  const result = await sender.finish();
  return { verified: result.verified, rounds: result.rounds };
}

try {
  const result = await (mode === "recv" ? receive() : send());
  console.log(JSON.stringify({ ok: result.verified, ...result }));
  if (!result.verified) process.exitCode = 1;
} catch (error) {
  const e = error as Error & { code?: string };
  console.log(JSON.stringify({ ok: false, error: { name: e.name, message: e.message, code: e.code } }));
  process.exitCode = 1;
}
