//! zc-ref-sink: the native receiving end of the stream benchmarks.
//!
//!   zc-ref-sink [PORT] [--host A.B.C.D]
//!
//! Listens on HOST:PORT (default 127.0.0.1, port 0 = any free port) and prints
//! `{"port":N}` on stdout, accepts ONE connection and receives with recvmsg into one
//! reusable, pre-faulted 4 MiB buffer until EOF; then prints one JSON line:
//! `{"bytes", "seconds", "GBps", "cpuSeconds", "calls", "peakRssKiB"}` — seconds from the
//! first byte to EOF, CPU (getrusage user+sys) over the same span.
const std = @import("std");
const c = @import("common.zig");

comptime {
    _ = @import("zc"); // the library's exports, called through common.zig's externs
}

const BUFFER_BYTES = 4 << 20;

pub fn main(init: std.process.Init.Minimal) u8 {
    var port: u64 = 0;
    var host: [4]u8 = .{ 127, 0, 0, 1 };
    var args = init.args.iterate();
    _ = args.skip();
    while (args.next()) |arg| {
        if (std.mem.eql(u8, arg, "--host")) {
            host = c.parseIpv4(args.next() orelse c.fail("--host needs an IPv4 address", .{}));
        } else if (std.mem.eql(u8, arg, "-h") or std.mem.eql(u8, arg, "--help")) {
            c.writeStdout("usage: zc-ref-sink [PORT] [--host A.B.C.D]\n");
            return 0;
        } else {
            port = c.parseU64(arg, "port");
            if (port > 65535) c.fail("bad port: {d}", .{port});
        }
    }

    var address: usize = 0;
    _ = c.check(c.zc_map_anonymous(@floatFromInt(BUFFER_BYTES), 0, &address), "mmap");
    _ = c.check(c.zc_prefault(@floatFromInt(address), @floatFromInt(BUFFER_BYTES), 1), "madvise(MADV_POPULATE_WRITE)");
    const iov = [1]c.Iovec{.{ .base = address, .len = BUFFER_BYTES }};

    const listener = c.check(c.zc_socket(4), "socket");
    _ = c.zc_set_option(listener, c.Option.reuse_address, 1);
    _ = c.check(c.zc_bind(listener, 4, &host, @intCast(port), 0), "bind");
    _ = c.check(c.zc_listen(listener, 1), "listen");
    c.printLine("{{\"port\":{d}}}", .{c.check(c.zc_local_port(listener), "getsockname")});

    const fd = c.acceptOne(listener);
    _ = c.zc_close(listener);

    var total: u64 = 0;
    var calls: u64 = 0;
    var started: f64 = 0;
    var cpu_started: f64 = 0;
    while (true) {
        const rc = c.zc_recvv(fd, &iov, 1);
        if (rc > 0) {
            if (total == 0) {
                started = c.now();
                cpu_started = c.cpuSeconds();
            }
            total += @intCast(rc);
            calls += 1;
            continue;
        }
        if (rc == 0) break;
        if (rc == -c.EINTR) continue;
        if (rc != -c.EAGAIN) _ = c.check(rc, "recvmsg");
        _ = c.waitFor(fd, c.POLLIN, "poll(recv)");
    }
    const seconds = if (total > 0) c.now() - started else 0;
    const cpu = if (total > 0) c.cpuSeconds() - cpu_started else 0;
    _ = c.zc_close(fd);
    const gbps = if (seconds > 0) @as(f64, @floatFromInt(total)) / seconds / 1e9 else 0;
    c.printLine(
        "{{\"bytes\":{d},\"seconds\":{d:.6},\"GBps\":{d:.4},\"cpuSeconds\":{d:.6},\"calls\":{d},\"peakRssKiB\":{d}}}",
        .{ total, seconds, gbps, cpu, calls, c.peakRssKiB() },
    );
    return 0;
}
