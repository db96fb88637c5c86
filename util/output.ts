/**
 * Synchronous line output on stdout and stderr: nothing is lost or interleaved when the
 * process exits right after, or when JSON lines are read by another process.
 * @module
 */
import { writeSync } from "node:fs";

/** Writes a line to stdout synchronously (a newline is added unless `text` ends with one). */
export function out(text: string): void {
  writeAll(1, text.endsWith("\n") ? text : text + "\n");
}

/** Writes a line to stderr synchronously. */
export function err(text: string): void {
  writeAll(2, text.endsWith("\n") ? text : text + "\n");
}

/** Writes `text` as is (no newline added) to file descriptor `fd`, synchronously. */
export function writeAll(fd: number, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  while (offset < bytes.length) {
    try {
      offset += writeSync(fd, bytes, offset, bytes.length - offset);
    } catch (error) {
      // A non-blocking pipe that is full: retry; anything else (EPIPE…) drops the output.
      if ((error as { code?: string }).code !== "EAGAIN") return;
    }
  }
}
