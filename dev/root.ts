/** The repository root, for tools that run from a checkout (tests, benchmarks). @module */
import { fileURLToPath } from "node:url";

/** The repository root (dev/..), with a trailing slash. */
export const ROOT = fileURLToPath(new URL("../", import.meta.url));
