/**
 * A Worker that imports nothing and says "ready" at once: what starting a Worker costs the
 * runtime itself (bench/startup.ts), before any module of ours loads.
 * @module
 */
declare const self: { postMessage(message: unknown): void };
self.postMessage({ kind: "ready" });
