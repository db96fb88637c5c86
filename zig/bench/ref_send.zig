//! zc-ref-send: the native reference sender of the stream benchmarks.
//!
//!   zc-ref-send HOST PORT BYTES [--zerocopy] [--write-bytes N] [--buffer-bytes N] [--buffer-offset N]
//!   zc-ref-send HOST PORT CALLS --empty
//!
//! Connects to HOST:PORT (IPv4) and sends BYTES bytes in writes of N bytes (default
//! 256 KiB) cycling through one pre-faulted source buffer (default 64 MiB), exactly as the
//! module does (--buffer-offset: the buffer starts N bytes into its first page, as a
//! buffer from malloc may; default 0, page-aligned): a non-blocking socket with TCP_NODELAY, one sendmsg(MSG_DONTWAIT) per write
//! (partial sends resumed), poll(POLLOUT) on EAGAIN. With --zerocopy: SO_ZEROCOPY, every
//! sendmsg with MSG_ZEROCOPY, the error queue drained whenever poll reports POLLERR or a
//! send fails with ENOBUFS, and at the end a wait until every send has completed.
//! Prints one JSON line: bytes, seconds, GBps, cpuSeconds (getrusage user+sys over the
//! send), calls (successful sendmsg calls), nsPerCall, zerocopy counters.
//! With --empty: CALLS sendmsg calls with no data at all (the syscall floor), for the
//! per-call overhead comparison with the same calls made through FFI.
const std = @import("std");
const c = @import("common.zig");

comptime {
    _ = @import("zc"); // the library's exports, called through common.zig's externs
}

const USAGE = "usage: zc-ref-send HOST PORT BYTES [--zerocopy] [--write-bytes N] [--buffer-bytes N] [--buffer-offset N]\n" ++
    "       zc-ref-send HOST PORT CALLS --empty\n";
const RECORDS = 64;
const ORIGIN_ZEROCOPY = 5;
const FLUSH_TIMEOUT_MS = 10_000;

const Completions = struct {
    sends: u64 = 0,
    completed: u64 = 0,
    copied: u64 = 0,
    records: [RECORDS * 4]u32 = undefined,

    /// Applies every queued completion; returns the number of records read.
    fn drain(self: *Completions, fd: i32) u64 {
        var total: u64 = 0;
        while (true) {
            const n: u32 = @intCast(c.check(c.zc_drain_errqueue(fd, &self.records, RECORDS), "recvmsg(MSG_ERRQUEUE)"));
            for (0..n) |i| {
                const rec = self.records[i * 4 ..][0..4];
                if (rec[2] >> 8 != ORIGIN_ZEROCOPY or rec[3] != 0) {
                    c.fail("error queue: origin {d} errno {d}", .{ rec[2] >> 8, rec[3] });
                }
                const count: u64 = @as(u64, rec[1] -% rec[0]) + 1; // inclusive range, 32-bit ids wrap
                self.completed += count;
                if (rec[2] & 1 != 0) self.copied += count;
            }
            total += n;
            if (n < RECORDS) return total;
        }
    }

    fn outstanding(self: *const Completions) u64 {
        return self.sends - self.completed;
    }
};

pub fn main(init: std.process.Init.Minimal) u8 {
    var positional: [3][]const u8 = undefined;
    var count: usize = 0;
    var zerocopy = false;
    var empty = false;
    var write_bytes: u64 = 256 << 10;
    var buffer_bytes: u64 = 64 << 20;
    var buffer_offset: u64 = 0;
    var args = init.args.iterate();
    _ = args.skip();
    while (args.next()) |arg| {
        if (std.mem.eql(u8, arg, "--zerocopy")) {
            zerocopy = true;
        } else if (std.mem.eql(u8, arg, "--empty")) {
            empty = true;
        } else if (std.mem.eql(u8, arg, "--write-bytes")) {
            write_bytes = c.flagValue(&args, "--write-bytes");
        } else if (std.mem.eql(u8, arg, "--buffer-bytes")) {
            buffer_bytes = c.flagValue(&args, "--buffer-bytes");
        } else if (std.mem.eql(u8, arg, "--buffer-offset")) {
            buffer_offset = c.flagValue(&args, "--buffer-offset");
        } else if (std.mem.eql(u8, arg, "-h") or std.mem.eql(u8, arg, "--help")) {
            c.writeStdout(USAGE);
            return 0;
        } else {
            if (count == 3) c.fail("too many arguments; " ++ USAGE, .{});
            positional[count] = arg;
            count += 1;
        }
    }
    if (count != 3) c.fail(USAGE, .{});
    const host = c.parseIpv4(positional[0]);
    const port = c.parseU64(positional[1], "port");
    const bytes = c.parseU64(positional[2], "byte count");
    if (port == 0 or port > 65535) c.fail("bad port {d}", .{port});
    if (write_bytes == 0 or write_bytes > (1 << 30)) c.fail("bad --write-bytes {d}", .{write_bytes});
    if (buffer_bytes < write_bytes) buffer_bytes = write_bytes;
    if (buffer_offset >= 4096) c.fail("bad --buffer-offset {d} (0 to 4095)", .{buffer_offset});

    // The source: anonymous 4 KiB pages like a JS ArrayBuffer, every page touched before timing.
    var mapping: usize = 0;
    _ = c.check(c.zc_map_anonymous(@floatFromInt(buffer_bytes + buffer_offset), 0, &mapping), "mmap");
    const address = mapping + buffer_offset;
    const buffer: [*]u8 = @ptrFromInt(address);
    c.fillPattern(buffer[0..buffer_bytes], 0x9e3779b97f4a7c15);

    const fd = c.check(c.zc_socket(4), "socket");
    c.connectTo(fd, &host, port);
    _ = c.zc_set_option(fd, c.Option.nodelay, 1);
    if (zerocopy) _ = c.check(c.zc_set_option(fd, c.Option.zerocopy, 1), "setsockopt(SO_ZEROCOPY)");

    if (empty) return emptySends(fd, bytes);

    var zc = Completions{};
    var calls: u64 = 0;
    var sent: u64 = 0;
    var enobufs: u64 = 0;
    const started = c.now();
    const cpu_started = c.cpuSeconds();
    while (sent < bytes) {
        const offset = sent % buffer_bytes;
        const length = @min(write_bytes, buffer_bytes - offset, bytes - sent);
        var iov = [1]c.Iovec{.{ .base = address + offset, .len = length }};
        while (iov[0].len > 0) {
            const n = c.zc_sendv(fd, &iov, 1, @intFromBool(zerocopy));
            if (n > 0) {
                const done: usize = @intCast(n);
                iov[0].base += done;
                iov[0].len -= done;
                sent += done;
                calls += 1;
                if (zerocopy) zc.sends += 1;
                continue;
            }
            if (n == -c.EINTR) continue;
            if (n == -c.EAGAIN) {
                const revents = c.waitFor(fd, c.POLLOUT, "poll(send)");
                if (revents & c.POLLERR != 0 and zerocopy) _ = zc.drain(fd);
                continue;
            }
            if (n == -c.ENOBUFS and zerocopy) {
                enobufs += 1;
                if (zc.drain(fd) > 0) continue;
                if (zc.outstanding() == 0) c.fail("ENOBUFS with no zero-copy send pending (optmem_max / RLIMIT_MEMLOCK)", .{});
                _ = c.check(c.zc_poll_one(fd, 0, FLUSH_TIMEOUT_MS), "poll(errqueue)");
                continue;
            }
            _ = c.check(n, "sendmsg");
        }
    }
    // The flush: every zero-copy send must complete before the buffer could be reused.
    while (zerocopy and zc.outstanding() > 0) {
        if (zc.drain(fd) > 0) continue;
        const revents = c.check(c.zc_poll_one(fd, 0, FLUSH_TIMEOUT_MS), "poll(errqueue)");
        if (revents == 0) c.fail("flush: no completion for {d} ms, {d} outstanding", .{ FLUSH_TIMEOUT_MS, zc.outstanding() });
        if (revents & @as(i32, c.POLLHUP) != 0 and zc.drain(fd) == 0) c.fail("flush: connection closed", .{});
    }
    const seconds = c.now() - started;
    const cpu = c.cpuSeconds() - cpu_started;
    _ = c.zc_close(fd);

    c.printLine(
        "{{\"bytes\":{d},\"seconds\":{d:.6},\"GBps\":{d:.4},\"cpuSeconds\":{d:.6},\"calls\":{d},\"nsPerCall\":{d:.1}," ++
            "\"writeBytes\":{d},\"zerocopy\":{},\"zerocopySends\":{d},\"zerocopyCompletions\":{d},\"zerocopyCopied\":{d}," ++
            "\"enobufs\":{d},\"peakRssKiB\":{d}}}",
        .{
            sent,           seconds,   @as(f64, @floatFromInt(sent)) / seconds / 1e9,
            cpu,            calls,     seconds * 1e9 / @as(f64, @floatFromInt(@max(calls, 1))),
            write_bytes,    zerocopy,  zc.sends,
            zc.completed,   zc.copied, enobufs,
            c.peakRssKiB(),
        },
    );
    return 0;
}

/// `calls` sendmsg calls with no iovec: the cost of the call itself (syscall entry, socket
/// lock), for comparison with the same call made from JS through FFI.
fn emptySends(fd: i32, calls: u64) u8 {
    var iov = [1]c.Iovec{.{ .base = 0, .len = 0 }};
    const started = c.now();
    const cpu_started = c.cpuSeconds();
    for (0..calls) |_| _ = c.check(c.zc_sendv(fd, &iov, 0, 0), "sendmsg");
    const seconds = c.now() - started;
    const cpu = c.cpuSeconds() - cpu_started;
    _ = c.zc_close(fd);
    c.printLine("{{\"bytes\":0,\"seconds\":{d:.6},\"cpuSeconds\":{d:.6},\"calls\":{d},\"nsPerCall\":{d:.1},\"empty\":true}}", .{
        seconds, cpu, calls, seconds * 1e9 / @as(f64, @floatFromInt(@max(calls, 1))),
    });
    return 0;
}
