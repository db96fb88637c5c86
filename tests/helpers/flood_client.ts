/**
 * Strangers for the connection-flood test, from a process of their own (as a flood comes
 * from elsewhere, not from the sender's event loop):
 *   flood_client.ts PORT COUNT LANES
 * runs COUNT connections, LANES at a time — each connects, sends 64 bytes of garbage and
 * closes; every 10th idles instead until the end (or until the receiver evicts it) — then
 * prints "DONE <count>". A line "stop" on stdin ends it early.
 */
import process from "node:process";
import { connect, type Socket } from "node:net";
import { createInterface } from "node:readline";

const [port, count, lanes] = process.argv.slice(2).map(Number);
let stopped = false;
const input = createInterface({ input: process.stdin });
input.on("line", (line) => (stopped ||= line === "stop"));

function stranger(index: number, idlers: Socket[]): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.on("error", () => resolve()); // evicted or refused: that is the receiver's right
    socket.on("close", () => resolve());
    socket.on("data", () => {}); // the HELLO
    socket.on("connect", () => {
      if (index % 10 === 0) {
        idlers.push(socket);
        resolve();
      } else {
        socket.end(new Uint8Array(64).fill(index & 0xff));
      }
    });
  });
}

const idlers: Socket[] = [];
let started = 0;
const lane = async () => {
  while (started < count && !stopped) await stranger(started++, idlers);
};
await Promise.all(Array.from({ length: lanes }, lane));
for (const socket of idlers) socket.destroy();
console.log(`DONE ${started}`);
input.close();
