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
