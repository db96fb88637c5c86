/**
 * Turns a hostname into the raw address bytes the native socket calls take. Names are
 * resolved here (node:dns, which Deno and Bun both provide), never in native code.
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { InvalidArgumentError } from "./errors.ts";

export interface SocketAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
  /** IPv6 zone (interface index) of a link-local address; 0 otherwise. */
  scopeId: number;
}

/** Resolves an IP literal (IPv6 optionally in brackets, with a numeric `%zone`) or a name. */
export async function resolveAddress(hostname: string): Promise<SocketAddress> {
  if (typeof hostname !== "string" || hostname.length === 0) {
    throw new InvalidArgumentError(`hostname must be a non-empty string, got ${String(hostname)}`);
  }
  const literal = hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
  const [ip, zone] = literal.split("%", 2);
  if (isIP(ip) !== 0) return parseIp(ip, zone);
  let resolved: { address: string; family: number };
  try {
    resolved = await lookup(hostname);
  } catch (cause) {
    throw new InvalidArgumentError(`cannot resolve hostname "${hostname}"`, { cause });
  }
  return parseIp(resolved.address, undefined);
}

function parseIp(ip: string, zone: string | undefined): SocketAddress {
  if (isIP(ip) === 4) return { family: 4, bytes: parseIpv4(ip), scopeId: 0 };
  let scopeId = 0;
  if (zone !== undefined) {
    if (!/^\d+$/.test(zone)) {
      throw new InvalidArgumentError(`IPv6 zone must be a numeric interface index, got "%${zone}"`);
    }
    scopeId = Number(zone);
  }
  return { family: 6, bytes: parseIpv6(ip), scopeId };
}

function parseIpv4(ip: string): Uint8Array {
  return Uint8Array.from(ip.split(".").map(Number));
}

function parseIpv6(ip: string): Uint8Array {
  let text = ip;
  // An embedded IPv4 tail (::ffff:1.2.3.4) is the last two 16-bit groups.
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".", lastColon)) {
    const [a, b, c, d] = parseIpv4(text.slice(lastColon + 1));
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::", 2) : [text, undefined];
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : new Array(8 - headGroups.length - tailGroups.length).fill("0");
  const bytes = new Uint8Array(16);
  [...headGroups, ...zeros, ...tailGroups].forEach((group, i) => {
    const value = parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}
