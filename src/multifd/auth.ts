/**
 * Channel authentication: the receiver sends a fresh nonce, the sender answers with
 * HMAC-SHA-256(secret, nonce || INIT fields). A replayed INIT fails (new nonce), a forged
 * one fails (no secret). WebCrypto, so the same code runs in Deno and Bun.
 * @module
 */
import { InvalidArgumentError } from "../errors.ts";
import { NONCE_BYTES } from "./wire.ts";

/** Shortest accepted {@link Secret}, in bytes: shorter ones are refused with InvalidArgumentError. */
export const MIN_SECRET_BYTES = 16;

/** A shared secret: raw bytes, or a string (its UTF-8 bytes). At least 16 bytes. */
export type Secret = Uint8Array | string;

export function importSecret(secret: Secret): Promise<CryptoKey> {
  const bytes = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  if (!(bytes instanceof Uint8Array) || bytes.length < MIN_SECRET_BYTES) {
    throw new InvalidArgumentError(`secret must be a string or Uint8Array of at least ${MIN_SECRET_BYTES} bytes`);
  }
  return crypto.subtle.importKey("raw", bytes.slice(), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

export function newNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

function message(nonce: Uint8Array, fields: Uint8Array): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(nonce.length + fields.length);
  bytes.set(nonce);
  bytes.set(fields, nonce.length);
  return bytes;
}

export async function signInit(key: CryptoKey, nonce: Uint8Array, fields: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, message(nonce, fields)));
}

/** Constant-time check (WebCrypto verify) of an INIT's MAC. */
export function verifyInit(key: CryptoKey, nonce: Uint8Array, fields: Uint8Array, mac: Uint8Array): Promise<boolean> {
  return crypto.subtle.verify("HMAC", key, mac.slice(), message(nonce, fields));
}
