//! Shared helpers of the native reference programs (zc-ref-sink, zc-ref-send, zc-ref-multifd): clocks,
//! CPU time, argument parsing, JSON output on stdout. No libc: std.os.linux only.
//!
//! The socket work itself goes through the library's own exports (zig/*.zig, linked into
//! each program from the `zc` module), so the reference makes exactly the module's
//! syscalls: sendmsg/recvmsg over iovecs with MSG_DONTWAIT, poll, MSG_ERRQUEUE drains.
const std = @import("std");
pub const linux = std.os.linux;

// The library's exports (zig/socket.zig, transfer.zig, errqueue.zig, poll.zig, memory.zig),
// compiled into the same executable through the `zc` module.
pub const Iovec = extern struct { base: usize, len: usize };
pub extern fn zc_socket(family: u32) i32;
pub extern fn zc_bind(fd: i32, family: u32, addr: [*]const u8, port: u32, scope_id: u32) i32;
pub extern fn zc_connect(fd: i32, family: u32, addr: [*]const u8, port: u32, scope_id: u32) i32;
pub extern fn zc_listen(fd: i32, backlog: u32) i32;
pub extern fn zc_accept(fd: i32) i32;
pub extern fn zc_local_port(fd: i32) i32;
pub extern fn zc_set_option(fd: i32, option_id: u32, value: i32) i32;
pub extern fn zc_get_option(fd: i32, option_id: u32) i32;
pub extern fn zc_shutdown(fd: i32, how: i32) i32;
pub extern fn zc_close(fd: i32) i32;
pub extern fn zc_sendv(fd: i32, iov: [*]const Iovec, count: u32, zerocopy: u32) i32;
pub extern fn zc_recvv(fd: i32, iov: [*]const Iovec, count: u32) i32;
pub extern fn zc_send_full(fd: i32, iov: [*]Iovec, count: u32, timeout_ms: i32, moved: *u64) i32;
pub extern fn zc_recv_full(fd: i32, iov: [*]Iovec, count: u32, timeout_ms: i32, moved: *u64) i32;
pub extern fn zc_drain_errqueue(fd: i32, out: [*]u32, capacity: u32) i32;
pub extern fn zc_poll_one(fd: i32, events: u32, timeout_ms: i32) i32;
// Addresses and sizes cross as f64, as the JS layers pass them (zig/sys.zig `Number`).
pub extern fn zc_map_anonymous(length: f64, huge_pages: u32, out: *usize) i32;
pub extern fn zc_prefault(address: f64, length: f64, for_write: u32) i32;

/// Socket option ids of zig/socket.zig (`Option`).
pub const Option = struct {
    pub const zerocopy: u32 = 0;
    pub const nodelay: u32 = 1;
    pub const send_buffer: u32 = 2;
    pub const reuse_address: u32 = 10;
    pub const pending_error: u32 = 11;
    pub const blocking_receive: u32 = 12;
};

pub const POLLIN: u32 = 0x001;
pub const POLLOUT: u32 = 0x004;
pub const POLLERR: u32 = 0x008;
pub const POLLHUP: u32 = 0x010;
pub const EINTR: i32 = 4;
pub const EAGAIN: i32 = 11;
pub const ENOBUFS: i32 = 105;
pub const EINPROGRESS: i32 = 115;

/// Monotonic time in seconds.
pub fn now() f64 {
    var ts: linux.timespec = undefined;
    _ = linux.clock_gettime(.MONOTONIC, &ts);
    return @as(f64, @floatFromInt(ts.sec)) + @as(f64, @floatFromInt(ts.nsec)) / 1e9;
}

/// User + system CPU seconds of this process (every thread), from getrusage.
pub fn cpuSeconds() f64 {
    var ru: linux.rusage = undefined;
    _ = linux.getrusage(linux.rusage.SELF, &ru);
    const user = @as(f64, @floatFromInt(ru.utime.sec)) + @as(f64, @floatFromInt(ru.utime.usec)) / 1e6;
    const sys = @as(f64, @floatFromInt(ru.stime.sec)) + @as(f64, @floatFromInt(ru.stime.usec)) / 1e6;
    return user + sys;
}

/// Peak resident set size of this process, KiB: VmHWM of /proc/self/status (getrusage's
/// maxrss also counts what the process that exec'd this program had, e.g. a benchmark's
/// runtime), -1 when it cannot be read.
pub fn peakRssKiB() i64 {
    const fd_rc: isize = @bitCast(linux.open("/proc/self/status", .{ .ACCMODE = .RDONLY, .CLOEXEC = true }, 0));
    if (fd_rc < 0) return -1;
    const fd: i32 = @intCast(fd_rc);
    defer _ = linux.close(fd);
    var buf: [8192]u8 = undefined;
    var len: usize = 0;
    while (len < buf.len) {
        const rc: isize = @bitCast(linux.read(fd, buf[len..].ptr, buf.len - len));
        if (rc <= 0) break;
        len += @intCast(rc);
    }
    const key = "VmHWM:";
    const at = std.mem.indexOf(u8, buf[0..len], key) orelse return -1;
    var rest = std.mem.trimStart(u8, buf[at + key.len .. len], " \t");
    const end = std.mem.indexOfAny(u8, rest, " \n") orelse return -1;
    rest = rest[0..end];
    return std.fmt.parseInt(i64, rest, 10) catch -1;
}

/// Writes all of `bytes` to stdout.
pub fn writeStdout(bytes: []const u8) void {
    var rest = bytes;
    while (rest.len > 0) {
        const rc: isize = @bitCast(linux.write(1, rest.ptr, rest.len));
        if (rc <= 0) return;
        rest = rest[@intCast(rc)..];
    }
}

/// Formats one line onto stdout (at most 1 KiB).
pub fn printLine(comptime format: []const u8, args: anytype) void {
    var buf: [1024]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, format ++ "\n", args) catch return;
    writeStdout(line);
}

/// Prints `{"error": message}` on stdout and a line on stderr, then exits with status 1.
pub fn fail(comptime format: []const u8, args: anytype) noreturn {
    var buf: [512]u8 = undefined;
    const message = std.fmt.bufPrint(&buf, format, args) catch "error";
    printLine("{{\"error\":\"{s}\"}}", .{message});
    var ebuf: [600]u8 = undefined;
    const line = std.fmt.bufPrint(&ebuf, "{s}\n", .{message}) catch "error\n";
    _ = linux.write(2, line.ptr, line.len);
    linux.exit_group(1);
}

/// Fails with the call's name and errno when `rc` is negative; returns it otherwise.
pub fn check(rc: i32, comptime what: []const u8) i32 {
    if (rc < 0) fail(what ++ " failed: errno {d}", .{-rc});
    return rc;
}

pub fn parseU64(text: []const u8, comptime what: []const u8) u64 {
    return std.fmt.parseInt(u64, text, 10) catch fail("bad " ++ what ++ ": {s}", .{text});
}

/// The number after flag `flag` in an argument iterator (the value the flag needs), or a failure.
pub fn flagValue(args: anytype, comptime flag: []const u8) u64 {
    return parseU64(args.next() orelse fail(flag ++ " needs a value", .{}), flag);
}

/// An IPv4 dotted quad as the 4 raw bytes zc_bind/zc_connect take (network order).
pub fn parseIpv4(text: []const u8) [4]u8 {
    var out: [4]u8 = undefined;
    var parts = std.mem.splitScalar(u8, text, '.');
    var i: usize = 0;
    while (parts.next()) |part| : (i += 1) {
        if (i == 4) fail("not an IPv4 address: {s}", .{text});
        out[i] = std.fmt.parseInt(u8, part, 10) catch fail("not an IPv4 address: {s}", .{text});
    }
    if (i != 4) fail("not an IPv4 address: {s}", .{text});
    return out;
}

/// Waits for `events` on `fd` (no limit); returns revents or fails.
pub fn waitFor(fd: i32, events: u32, comptime what: []const u8) u32 {
    while (true) {
        const rc = zc_poll_one(fd, events, -1);
        if (rc == -EINTR) continue;
        return @intCast(check(rc, what));
    }
}

/// Connects the (non-blocking) socket `fd` to an IPv4 `host`:`port`, waiting for the handshake; fails on error.
pub fn connectTo(fd: i32, host: *const [4]u8, port: u64) void {
    const rc = zc_connect(fd, 4, host, @intCast(port), 0);
    if (rc == -EINPROGRESS) {
        _ = waitFor(fd, POLLOUT, "poll(connect)");
        const pending = zc_get_option(fd, Option.pending_error);
        if (pending != 0) fail("connect failed: errno {d}", .{pending});
    } else _ = check(rc, "connect");
}

/// The next connection on `listener` (non-blocking: waits in poll); fails on error.
pub fn acceptOne(listener: i32) i32 {
    while (true) {
        const fd = zc_accept(listener);
        if (fd >= 0) return fd;
        if (fd != -EAGAIN and fd != -EINTR) _ = check(fd, "accept");
        _ = waitFor(listener, POLLIN, "poll(accept)");
    }
}

/// A random-looking, non-zero fill (xorshift64) so nothing on the path can shortcut zeros.
pub fn fillPattern(bytes: []u8, seed: u64) void {
    var x: u64 = seed | 1;
    const words: []align(1) u64 = std.mem.bytesAsSlice(u64, bytes[0 .. bytes.len & ~@as(usize, 7)]);
    for (words) |*w| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.* = x;
    }
    for (bytes[bytes.len & ~@as(usize, 7) ..]) |*b| b.* = 0x5a;
}

/// Whether `bytes` hold exactly what {@link fillPattern} with `seed` writes.
pub fn patternMatches(bytes: []const u8, seed: u64) bool {
    var x: u64 = seed | 1;
    const words: []align(1) const u64 = std.mem.bytesAsSlice(u64, bytes[0 .. bytes.len & ~@as(usize, 7)]);
    for (words) |w| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (w != x) return false;
    }
    for (bytes[bytes.len & ~@as(usize, 7) ..]) |b| if (b != 0x5a) return false;
    return true;
}
