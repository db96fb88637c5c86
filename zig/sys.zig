//! Shared helpers for the exported syscall wrappers: every export returns the raw
//! kernel result, so a negative value is exactly `-errno` and callers need no libc.
const std = @import("std");
pub const linux = std.os.linux;

/// The kernel's return value as a signed integer: `-errno` on failure.
pub fn result(rc: usize) isize {
    return @bitCast(rc);
}

/// Results that fit in 32 bits (fds, byte counts capped by the kernel's MAX_RW_COUNT).
pub fn result32(rc: usize) i32 {
    return @intCast(result(rc));
}

pub fn errnoOf(e: linux.E) i32 {
    return -@as(i32, @intFromEnum(e));
}

/// An address, size or count as the TypeScript layers hold it: a JS number, a double
/// (exact below 2^53). Exports take these as f64, not as 64-bit integers: both runtimes
/// pass doubles on their fast FFI path, while a 64-bit integer parameter sends every Deno
/// 2.9 call down its slow path, several times slower (`bench/call_overhead.ts --method
/// ffi-pages-empty` times such a call as it is now).
pub const Number = f64;

/// The whole number `x` stands for, or null when it is not one in [0, 2^53] (NaN included).
pub fn whole(x: Number) ?u64 {
    if (!(x >= 0 and x <= 0x1p53) or @trunc(x) != x) return null;
    return @intFromFloat(x);
}

/// What an export returns for a Number argument that is not a whole number (`whole`).
pub const invalid_number: i32 = -@as(i32, @intFromEnum(linux.E.INVAL));
