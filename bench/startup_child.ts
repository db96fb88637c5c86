/**
 * The process bench/startup.ts measures: the start-up steps of a transfer from a new
 * process, in the order one pays them. No static imports, so that nothing is loaded before
 * the clock starts. Prints one JSON line (ms).
 * @module
 */
/** Channel Workers started: the benchmarks' 4 channels. */
const workers = 4;
const at = performance.now();
await import("../ffi/mod.ts");
const ffi = performance.now();
await import("../mod.ts");
const module = performance.now();
const { WorkerPool } = await import("../src/multifd/worker_pool.ts");
const pool = await WorkerPool.start(new URL("../src/multifd/channel_worker.ts", import.meta.url), workers, () => {});
const ready = performance.now();
await pool.shutdown(1000);
// The runtime's own share of a Worker's start: as many Workers that import nothing.
const emptyStarted = performance.now();
const empty = await WorkerPool.start(new URL("./lib/empty_worker.ts", import.meta.url), workers, () => {});
const emptyReady = performance.now();
await empty.shutdown(1000);
const { currentRuntime } = await import("../dev/runtime.ts");
const ms = (value: number) => Math.round(value * 10) / 10;
console.log(JSON.stringify({
  bench: "startup",
  runtime: currentRuntime,
  workers,
  ffiMs: ms(ffi - at),
  moduleMs: ms(module - ffi),
  workersMs: ms(ready - module),
  emptyWorkersMs: ms(emptyReady - emptyStarted),
}));
