/**
 * Two test hosts made of network namespaces joined by a veth pair (root only). Each
 * call makes its own names and /30 subnet; `remove()` deletes both namespaces (and so the
 * veth pair).
 */
import { spawnSync } from "node:child_process";
import process from "node:process";

export interface Host {
  ns: string;
  ip: string;
  device: string;
}

export interface TwoHosts {
  a: Host;
  b: Host;
  remove(): void;
}

let serial = 0;

export function sh(argv: string[]): string {
  const result = spawnSync(argv[0], argv.slice(1), { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${argv.join(" ")} failed: ${result.stderr || result.error}`);
  return result.stdout;
}

export function inNamespace(ns: string, argv: string[]): string[] {
  return ["ip", "netns", "exec", ns, ...argv];
}

export function twoHosts(): TwoHosts {
  const id = `${process.pid % 10000}x${serial++}`;
  const subnet = (process.pid % 200) + serial; // 10.77.<subnet>.0/30 per pair
  const a: Host = { ns: `zcmf-a-${id}`, ip: `10.77.${subnet}.1`, device: `zva${id}` };
  const b: Host = { ns: `zcmf-b-${id}`, ip: `10.77.${subnet}.2`, device: `zvb${id}` };
  const remove = () => {
    for (const host of [a, b]) spawnSync("ip", ["netns", "del", host.ns]);
  };
  try {
    sh(["ip", "netns", "add", a.ns]);
    sh(["ip", "netns", "add", b.ns]);
    sh(["ip", "link", "add", a.device, "netns", a.ns, "type", "veth", "peer", "name", b.device, "netns", b.ns]);
    for (const host of [a, b]) {
      sh(inNamespace(host.ns, ["ip", "link", "set", "lo", "up"]));
      sh(inNamespace(host.ns, ["ip", "addr", "add", `${host.ip}/30`, "dev", host.device]));
      sh(inNamespace(host.ns, ["ip", "link", "set", host.device, "up"]));
    }
  } catch (error) {
    remove();
    throw error;
  }
  return { a, b, remove };
}
