/**
 * Validation of options shared by every entry point, so that each option is
 * refused with the same clear message wherever it is given.
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";

/** The largest timeout a timer or poll(2) takes, in ms (about 24.8 days). */
export const MAX_TIMEOUT_MS = 0x7fffffff;

/**
 * A timeout option in ms: `undefined` gives `fallback`; -1 means no limit where
 * `noLimit` allows it.
 */
export function timeoutMs(name: string, value: number | undefined, fallback: number, noLimit = true): number {
  if (value === undefined) return fallback;
  const valid = Number.isInteger(value) && value <= MAX_TIMEOUT_MS && (noLimit ? value >= -1 : value >= 1);
  if (!valid) {
    const range = noLimit ? `0..${MAX_TIMEOUT_MS}, or -1 for no limit` : `1..${MAX_TIMEOUT_MS}`;
    throw new InvalidArgumentError(`${name} must be an integer number of ms in ${range}, got ${value}`);
  }
  return value;
}

/** An integer option in `min..max`; `undefined` gives `fallback`. */
export function integerOption(
  name: string,
  value: number | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  }
  return value;
}

/** A boolean option; `undefined` gives false. */
export function booleanOption(name: string, value: boolean | undefined): boolean {
  if (value !== undefined && typeof value !== "boolean") {
    throw new InvalidArgumentError(`${name} must be true or false, got ${String(value)}`);
  }
  return value === true;
}
