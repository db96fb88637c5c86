//! zc-ref-multifd: the native reference of the multifd benchmark — the same bytes over the
//! same number of loopback TCP connections as a multifd transfer, with the system calls of
//! the module's channel Workers and nothing else: no protocol, no headers, no JavaScript.
//!
//!   zc-ref-multifd recv BYTES [--channels N] [--huge] [--host A.B.C.D]
//!   zc-ref-multifd send HOST PORT BYTES [--channels N] [--huge] [--send-buffer N] [--chunk N] [--head N]
//!                  [--interleaved]
//!
//! Both ends hold a BYTES region (anonymous memory, with --huge on 2 MiB pages as
//! `Region.allocate({ hugePages: true })` does), every page touched before timing; the
//! sender's is filled with a non-zero pattern. Channel i carries the i-th of N equal slices
//! of the region, into the same place of the receiver's, in chunks of --chunk bytes (default
//! 2 MiB, the module's default packet), one thread per channel on each side, with the calls
//! of a channel Worker's hot path (the library's zc_send_full: non-blocking sendmsg and poll
//! when the socket is full; zc_recv_full on a socket made blocking: recvmsg(MSG_WAITALL)).
//! --interleaved: channel i carries chunks i, i + N, i + 2N, … instead (as the module's
//! Workers take packets from one cursor). --head N puts N more bytes before every chunk, in the same send call, read apart by the
//! receiver, as a packet's header and offsets go before its pages (default 0).
//! --send-buffer sets SO_SNDBUF on every sending socket (default 262144, what the module
//! uses with its peer on the same host; 0 = the kernel's autotuning). When a receiving
//! thread has its slice it answers one byte; the sender's clock stops when every answer is
//! in, as the module's round ends at the receiver's word.
//!
//! recv prints `{"port":N}`, then one JSON line when done; send prints one JSON line. Both:
//! bytes, seconds, GBps, cpuSeconds (getrusage user+sys of the whole process over the
//! transfer: the sender from its first send to the last answer, the receiver from the last
//! accept to the last slice) and systemCpuSeconds (its kernel part).
const std = @import("std");
const c = @import("common.zig");
const linux = c.linux;

comptime {
    _ = @import("zc"); // the library's exports, called through common.zig's externs
}

const USAGE = "usage: zc-ref-multifd recv BYTES [--channels N] [--huge] [--host A.B.C.D]\n" ++
    "       zc-ref-multifd send HOST PORT BYTES [--channels N] [--huge] [--send-buffer N] [--chunk N] [--head N]\n" ++
    "       [--interleaved] (--chunk, --head, --interleaved: the same on both ends)\n";
const MAX_CHANNELS = 64;
const SLICE_ALIGN = 4096;
const SEED = 0x9e3779b97f4a7c15;

const Settings = struct {
    bytes: u64 = 0,
    channels: u64 = 4,
    huge: bool = false,
    host: [4]u8 = .{ 127, 0, 0, 1 },
    port: u64 = 0,
    send_buffer: u64 = 256 << 10,
    chunk: u64 = 2 << 20,
    head: u64 = 0,
    interleaved: bool = false,
};

/// The most --head allows (a packet header and its offsets are a few KiB).
const MAX_HEAD = 64 << 10;

pub fn main(init: std.process.Init.Minimal) u8 {
    var positional: [4][]const u8 = undefined;
    var count: usize = 0;
    var s = Settings{};
    var args = init.args.iterate();
    _ = args.skip();
    while (args.next()) |arg| {
        if (std.mem.eql(u8, arg, "--huge")) {
            s.huge = true;
        } else if (std.mem.eql(u8, arg, "--channels")) {
            s.channels = c.flagValue(&args, "--channels");
        } else if (std.mem.eql(u8, arg, "--send-buffer")) {
            s.send_buffer = c.flagValue(&args, "--send-buffer");
        } else if (std.mem.eql(u8, arg, "--interleaved")) {
            s.interleaved = true;
        } else if (std.mem.eql(u8, arg, "--head")) {
            s.head = c.flagValue(&args, "--head");
        } else if (std.mem.eql(u8, arg, "--chunk")) {
            s.chunk = c.flagValue(&args, "--chunk");
        } else if (std.mem.eql(u8, arg, "--host")) {
            s.host = c.parseIpv4(args.next() orelse c.fail("--host needs an IPv4 address", .{}));
        } else if (std.mem.eql(u8, arg, "-h") or std.mem.eql(u8, arg, "--help")) {
            c.writeStdout(USAGE);
            return 0;
        } else {
            if (count == positional.len) c.fail("too many arguments; " ++ USAGE, .{});
            positional[count] = arg;
            count += 1;
        }
    }
    if (count == 0) c.fail(USAGE, .{});
    const sending = std.mem.eql(u8, positional[0], "send");
    if (!sending and !std.mem.eql(u8, positional[0], "recv")) c.fail(USAGE, .{});
    if (count != @as(usize, if (sending) 4 else 2)) c.fail(USAGE, .{});
    if (sending) {
        s.host = c.parseIpv4(positional[1]);
        s.port = c.parseU64(positional[2], "port");
        if (s.port == 0 or s.port > 65535) c.fail("bad port {d}", .{s.port});
    }
    s.bytes = c.parseU64(positional[count - 1], "byte count");
    if (s.channels == 0 or s.channels > MAX_CHANNELS) c.fail("bad --channels {d} (1 to {d})", .{ s.channels, MAX_CHANNELS });
    if (s.bytes == 0 or s.bytes % (s.channels * SLICE_ALIGN) != 0) {
        c.fail("BYTES must be a positive multiple of {d} x channels", .{SLICE_ALIGN});
    }
    if (s.chunk == 0 or s.chunk > (1 << 30)) c.fail("bad --chunk {d}", .{s.chunk});
    if (s.head > MAX_HEAD) c.fail("bad --head {d} (at most {d})", .{ s.head, MAX_HEAD });
    if (s.send_buffer > std.math.maxInt(i32)) c.fail("bad --send-buffer {d}", .{s.send_buffer});

    const region = mapRegion(s.bytes, s.huge);
    if (sending) {
        c.fillPattern(region, SEED);
        return send(s, region);
    }
    return receive(s, region);
}

/// The region, every page touched (for the receiver, as a prefaulted Region is).
fn mapRegion(bytes: u64, huge: bool) []u8 {
    var address: usize = 0;
    _ = c.check(c.zc_map_anonymous(@floatFromInt(bytes), @intFromBool(huge), &address), "mmap");
    _ = c.check(c.zc_prefault(@floatFromInt(address), @floatFromInt(bytes), 1), "madvise(MADV_POPULATE_WRITE)");
    const base: [*]u8 = @ptrFromInt(address);
    return base[0..bytes];
}

/// What one channel's thread moves: chunks `first`, `first + step`, … of the region (a
/// contiguous slice: step 1 over the slice; interleaved: first = channel, step = channels).
const Slice = struct { fd: i32, region: []u8, first: usize, step: usize, chunk: usize, head: usize };

/// Chunk `k` of the region (the last may be short), or null past its end.
fn chunkAt(slice: Slice, k: usize) ?[]u8 {
    const at = k * slice.chunk;
    if (at >= slice.region.len) return null;
    return slice.region[at..][0..@min(slice.chunk, slice.region.len - at)];
}

fn sendSlice(slice: Slice) void {
    var head: [MAX_HEAD]u8 = @splat(0x5a);
    var k = slice.first;
    while (chunkAt(slice, k)) |bytes| : (k += slice.step) {
        // Head and chunk in one call, as a packet's header and offsets go with its pages.
        var iov = [2]c.Iovec{
            .{ .base = @intFromPtr(&head), .len = slice.head },
            .{ .base = @intFromPtr(bytes.ptr), .len = bytes.len },
        };
        var moved: u64 = 0;
        const rc = c.zc_send_full(slice.fd, &iov, 2, -1, &moved);
        if (rc < 0 or moved != slice.head + bytes.len) c.fail("send failed: errno {d}", .{-rc});
    }
    var answer: [1]u8 = undefined;
    if (move(.receive, slice.fd, &answer) != 1) c.fail("no answer from the receiver", .{});
}

fn receiveSlice(slice: Slice) void {
    var head: [MAX_HEAD]u8 = undefined;
    var k = slice.first;
    while (chunkAt(slice, k)) |bytes| : (k += slice.step) {
        if (slice.head > 0 and move(.receive, slice.fd, head[0..slice.head]) != slice.head) c.fail("the sender closed early", .{});
        if (move(.receive, slice.fd, bytes) != bytes.len) c.fail("the sender closed early", .{});
    }
    sendByte(slice.fd, 1);
}

fn sendByte(fd: i32, byte: u8) void {
    var one = [1]u8{byte};
    if (move(.send, fd, &one) != 1) c.fail("sending one byte failed", .{});
}

/// The whole of `bytes` sent or received with the calls a channel Worker's hot path makes
/// (zc_send_full: non-blocking sendmsg, poll when the socket is full; zc_recv_full on a
/// socket made blocking: recvmsg(MSG_WAITALL)); the bytes moved (fewer: the peer closed).
fn move(comptime direction: enum { send, receive }, fd: i32, bytes: []u8) u64 {
    var iov = [1]c.Iovec{.{ .base = @intFromPtr(bytes.ptr), .len = bytes.len }};
    var moved: u64 = 0;
    const rc = switch (direction) {
        .send => c.zc_send_full(fd, &iov, 1, -1, &moved),
        .receive => c.zc_recv_full(fd, &iov, 1, -1, &moved),
    };
    if (rc < 0) c.fail("{s} failed: errno {d}", .{ @tagName(direction), -rc });
    return moved;
}

/// Runs `work` on one thread per channel, each with its slice; the seconds and CPU it took.
fn runChannels(comptime work: fn (Slice) void, fds: []const i32, region: []u8, s: Settings) [3]f64 {
    var threads: [MAX_CHANNELS]std.Thread = undefined;
    const per = region.len / fds.len;
    const started = c.now();
    const cpu_started = cpuTimes();
    for (fds, 0..) |fd, i| {
        const slice = if (s.interleaved)
            Slice{ .fd = fd, .region = region, .first = i, .step = fds.len, .chunk = s.chunk, .head = s.head }
        else
            Slice{ .fd = fd, .region = region[i * per ..][0..per], .first = 0, .step = 1, .chunk = s.chunk, .head = s.head };
        threads[i] = std.Thread.spawn(.{ .stack_size = 256 << 10 }, work, .{slice}) catch c.fail("thread spawn failed", .{});
    }
    for (threads[0..fds.len]) |thread| thread.join();
    const cpu = cpuTimes();
    return .{ c.now() - started, cpu[0] - cpu_started[0], cpu[1] - cpu_started[1] };
}

/// User + system and system CPU seconds of the whole process.
fn cpuTimes() [2]f64 {
    var ru: linux.rusage = undefined;
    _ = linux.getrusage(linux.rusage.SELF, &ru);
    const user = @as(f64, @floatFromInt(ru.utime.sec)) + @as(f64, @floatFromInt(ru.utime.usec)) / 1e6;
    const sys = @as(f64, @floatFromInt(ru.stime.sec)) + @as(f64, @floatFromInt(ru.stime.usec)) / 1e6;
    return .{ user + sys, sys };
}

fn send(s: Settings, region: []u8) u8 {
    var fds: [MAX_CHANNELS]i32 = undefined;
    for (fds[0..s.channels]) |*fd| {
        fd.* = c.check(c.zc_socket(4), "socket");
        if (s.send_buffer > 0) _ = c.check(c.zc_set_option(fd.*, c.Option.send_buffer, @intCast(s.send_buffer)), "setsockopt(SO_SNDBUF)");
        c.connectTo(fd.*, &s.host, s.port);
        _ = c.zc_set_option(fd.*, c.Option.nodelay, 1);
    }
    // Each connection first says which slice it carries (the receiver accepts them in the
    // order they arrive), before the clock starts.
    for (fds[0..s.channels], 0..) |fd, i| sendByte(fd, @intCast(i));
    const took = runChannels(sendSlice, fds[0..s.channels], region, s);
    for (fds[0..s.channels]) |fd| _ = c.zc_close(fd);
    report(s, took, null);
    return 0;
}

fn receive(s: Settings, region: []u8) u8 {
    const listener = c.check(c.zc_socket(4), "socket");
    _ = c.zc_set_option(listener, c.Option.reuse_address, 1);
    _ = c.check(c.zc_bind(listener, 4, &s.host, 0, 0), "bind");
    _ = c.check(c.zc_listen(listener, @intCast(s.channels)), "listen");
    c.printLine("{{\"port\":{d}}}", .{c.check(c.zc_local_port(listener), "getsockname")});
    var fds: [MAX_CHANNELS]i32 = @splat(-1);
    for (0..s.channels) |_| {
        const fd = c.acceptOne(listener);
        // As a receiving channel Worker's socket (SocketChannel.blockInReceive): reads wait in recvmsg.
        _ = c.check(c.zc_set_option(fd, c.Option.blocking_receive, -1), "setsockopt(SO_RCVTIMEO)");
        var index: [1]u8 = undefined;
        if (move(.receive, fd, &index) != 1 or index[0] >= s.channels or fds[index[0]] != -1) c.fail("bad channel index", .{});
        fds[index[0]] = fd;
    }
    _ = c.zc_close(listener);
    const took = runChannels(receiveSlice, fds[0..s.channels], region, s);
    for (fds[0..s.channels]) |fd| _ = c.zc_close(fd);
    report(s, took, c.patternMatches(region, SEED));
    return 0;
}

/// The JSON line; `verified` (the receiver's: the region holds the sender's pattern) only on the receiving side.
fn report(s: Settings, took: [3]f64, verified: ?bool) void {
    c.printLine(
        "{{\"bytes\":{d},\"channels\":{d},\"seconds\":{d:.6},\"GBps\":{d:.4},\"cpuSeconds\":{d:.6},\"systemCpuSeconds\":{d:.6}," ++
            "\"peakRssKiB\":{d}{s}}}",
        .{
            s.bytes,        s.channels,                                                                           took[0], @as(f64, @floatFromInt(s.bytes)) / took[0] / 1e9, took[1], took[2],
            c.peakRssKiB(), if (verified) |ok| (if (ok) ",\"verified\":true" else ",\"verified\":false") else "",
        },
    );
}
