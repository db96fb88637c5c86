//! TCP socket set-up and teardown. Addresses arrive as raw bytes (4 or 16) plus a port,
//! so the kernel's sockaddr layout is known only here.
const std = @import("std");
const sys = @import("sys.zig");
const linux = sys.linux;

/// Socket options by a small stable id, so the TypeScript side never needs the kernel's
/// per-level constants. Keep in sync with `SocketOption` in ffi/symbols.ts.
const Option = enum(u32) {
    zerocopy = 0,
    nodelay = 1,
    send_buffer = 2,
    receive_buffer = 3,
    keepalive = 4,
    keepalive_idle_s = 5,
    keepalive_interval_s = 6,
    keepalive_count = 7,
    user_timeout_ms = 8,
    linger_reset = 9,
    reuse_address = 10,
    pending_error = 11,
    blocking_receive = 12,
    _,
};

fn levelAndName(option: Option) ?[2]u32 {
    return switch (option) {
        .zerocopy => .{ linux.SOL.SOCKET, linux.SO.ZEROCOPY },
        .nodelay => .{ linux.IPPROTO.TCP, linux.TCP.NODELAY },
        .send_buffer => .{ linux.SOL.SOCKET, linux.SO.SNDBUF },
        .receive_buffer => .{ linux.SOL.SOCKET, linux.SO.RCVBUF },
        .keepalive => .{ linux.SOL.SOCKET, linux.SO.KEEPALIVE },
        .keepalive_idle_s => .{ linux.IPPROTO.TCP, linux.TCP.KEEPIDLE },
        .keepalive_interval_s => .{ linux.IPPROTO.TCP, linux.TCP.KEEPINTVL },
        .keepalive_count => .{ linux.IPPROTO.TCP, linux.TCP.KEEPCNT },
        .user_timeout_ms => .{ linux.IPPROTO.TCP, linux.TCP.USER_TIMEOUT },
        .reuse_address => .{ linux.SOL.SOCKET, linux.SO.REUSEADDR },
        .pending_error => .{ linux.SOL.SOCKET, linux.SO.ERROR },
        .linger_reset, .blocking_receive => null,
        _ => null,
    };
}

const Address = extern union {
    any: linux.sockaddr,
    v4: linux.sockaddr.in,
    v6: linux.sockaddr.in6,
};

fn makeAddress(family: u32, addr: [*]const u8, port: u32, scope_id: u32, len: *linux.socklen_t) ?Address {
    const port_be = std.mem.nativeToBig(u16, @truncate(port));
    switch (family) {
        4 => {
            len.* = @sizeOf(linux.sockaddr.in);
            return .{ .v4 = .{ .port = port_be, .addr = std.mem.readInt(u32, addr[0..4], .little) } };
        },
        6 => {
            len.* = @sizeOf(linux.sockaddr.in6);
            return .{ .v6 = .{ .port = port_be, .flowinfo = 0, .addr = addr[0..16].*, .scope_id = scope_id } };
        },
        else => return null,
    }
}

/// A non-blocking, close-on-exec TCP socket for family 4 or 6.
export fn zc_socket(family: u32) i32 {
    const af: u32 = switch (family) {
        4 => linux.AF.INET,
        6 => linux.AF.INET6,
        else => return sys.errnoOf(.AFNOSUPPORT),
    };
    return sys.result32(linux.socket(af, linux.SOCK.STREAM | linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC, 0));
}

export fn zc_bind(fd: i32, family: u32, addr: [*]const u8, port: u32, scope_id: u32) i32 {
    var len: linux.socklen_t = 0;
    var sa = makeAddress(family, addr, port, scope_id, &len) orelse return sys.errnoOf(.AFNOSUPPORT);
    return sys.result32(linux.bind(fd, &sa.any, len));
}

/// Starts a connect; on a non-blocking socket this normally returns -EINPROGRESS and the
/// outcome is read later with `pending_error` once the socket polls writable.
export fn zc_connect(fd: i32, family: u32, addr: [*]const u8, port: u32, scope_id: u32) i32 {
    var len: linux.socklen_t = 0;
    var sa = makeAddress(family, addr, port, scope_id, &len) orelse return sys.errnoOf(.AFNOSUPPORT);
    return sys.result32(linux.connect(fd, &sa.any, len));
}

export fn zc_listen(fd: i32, backlog: u32) i32 {
    return sys.result32(linux.listen(fd, backlog));
}

/// Accepted sockets are non-blocking and close-on-exec like the ones zc_socket makes.
export fn zc_accept(fd: i32) i32 {
    return sys.result32(linux.accept4(fd, null, null, linux.SOCK.NONBLOCK | linux.SOCK.CLOEXEC));
}

/// The bound local port (host order), or -errno.
export fn zc_local_port(fd: i32) i32 {
    var sa: Address = undefined;
    var len: linux.socklen_t = @sizeOf(Address);
    const rc = sys.result32(linux.getsockname(fd, &sa.any, &len));
    if (rc < 0) return rc;
    return std.mem.bigToNative(u16, sa.v4.port); // same offset in sockaddr_in and sockaddr_in6
}

/// The connection's local (getsockname) and peer (getpeername) addresses, raw, into
/// `out[0..32]` and `out[32..64]` (sockaddr_in or sockaddr_in6, zero-padded). 0 or -errno.
export fn zc_socket_addresses(fd: i32, out: [*]u8) i32 {
    @memset(out[0..64], 0);
    var sa: Address = undefined;
    var len: linux.socklen_t = @sizeOf(Address);
    var rc = sys.result32(linux.getsockname(fd, &sa.any, &len));
    if (rc < 0) return rc;
    @memcpy(out[0..@min(len, 32)], std.mem.asBytes(&sa)[0..@min(len, 32)]);
    len = @sizeOf(Address);
    rc = sys.result32(linux.getpeername(fd, &sa.any, &len));
    if (rc < 0) return rc;
    @memcpy(out[32 .. 32 + @min(len, 32)], std.mem.asBytes(&sa)[0..@min(len, 32)]);
    return 0;
}

export fn zc_set_option(fd: i32, option_id: u32, value: i32) i32 {
    const option: Option = @enumFromInt(option_id);
    if (option == .blocking_receive) return blockingReceive(fd, value);
    if (option == .linger_reset) {
        // l_onoff=1, l_linger=0: close() sends RST and drops queued data at once.
        const lg = linux.linger{ .onoff = if (value != 0) 1 else 0, .linger = 0 };
        return sys.result32(linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.LINGER, std.mem.asBytes(&lg), @sizeOf(linux.linger)));
    }
    const ln = levelAndName(option) orelse return sys.errnoOf(.NOPROTOOPT);
    return sys.result32(linux.setsockopt(fd, @intCast(ln[0]), ln[1], std.mem.asBytes(&value), @sizeOf(i32)));
}

/// Makes recvmsg on `fd` block (clears O_NONBLOCK), each call for up to `timeout_ms`
/// (SO_RCVTIMEO; -1: no limit), for a thread that only reads it: zc_recv_full then waits
/// inside recvmsg(MSG_WAITALL), as QEMU's receive threads do, without a poll per wake-up.
/// Every other call of this library passes MSG_DONTWAIT, so nothing else starts to block.
fn blockingReceive(fd: i32, timeout_ms: i32) i32 {
    const ms: i64 = if (timeout_ms < 0) 0 else timeout_ms;
    const tv = linux.timeval{ .sec = @intCast(@divTrunc(ms, 1000)), .usec = @rem(ms, 1000) * 1000 };
    const rc = sys.result32(linux.setsockopt(fd, linux.SOL.SOCKET, linux.SO.RCVTIMEO, std.mem.asBytes(&tv), @sizeOf(linux.timeval)));
    if (rc < 0) return rc;
    const flags = sys.result(linux.fcntl(fd, linux.F.GETFL, 0));
    if (flags < 0) return @intCast(flags);
    const nonblock: usize = @as(u32, @bitCast(linux.O{ .NONBLOCK = true }));
    return sys.result32(linux.fcntl(fd, linux.F.SETFL, @as(usize, @intCast(flags)) & ~nonblock));
}

/// An integer option's value (>= 0), or -errno.
export fn zc_get_option(fd: i32, option_id: u32) i32 {
    const ln = levelAndName(@enumFromInt(option_id)) orelse return sys.errnoOf(.NOPROTOOPT);
    var value: i32 = 0;
    var len: linux.socklen_t = @sizeOf(i32);
    const rc = sys.result32(linux.getsockopt(fd, @intCast(ln[0]), ln[1], std.mem.asBytes(&value), &len));
    return if (rc < 0) rc else value;
}

/// how: 0 = read side, 1 = write side, 2 = both. Wakes any thread blocked on the socket.
export fn zc_shutdown(fd: i32, how: i32) i32 {
    return sys.result32(linux.shutdown(fd, how));
}

export fn zc_close(fd: i32) i32 {
    return sys.result32(linux.close(fd));
}

/// capget(2) header, as the kernel lays it out (`pid` is a C int).
const CapHeader = extern struct { version: u32, pid: i32 };
const capability_version_3: u32 = 0x20080522;

/// The calling process's facts on which the kernel's MSG_ZEROCOPY locked-memory charge
/// depends (net/core/skbuff.c mm_account_pinned_pages), written to `out`:
///   out[0] RLIMIT_MEMLOCK soft limit in bytes (2^64 - 1: unlimited),
///   out[1] effective capability set (bit n = capability n),
///   out[2] inode of /proc/self/ns/user, the process's user namespace (0: unknown).
/// Returns 0, or -errno of prlimit64/capget. No interpretation here: that is policy.
export fn zc_locked_memory_facts(out: *[3]u64) i32 {
    var limit: linux.rlimit = undefined;
    const limit_rc = sys.result32(linux.prlimit(0, .MEMLOCK, null, &limit));
    if (limit_rc < 0) return limit_rc;
    var header = CapHeader{ .version = capability_version_3, .pid = 0 };
    var data: [2]linux.cap_user_data_t = undefined;
    const cap_rc = sys.result32(linux.syscall2(.capget, @intFromPtr(&header), @intFromPtr(&data)));
    if (cap_rc < 0) return cap_rc;
    var namespace: linux.Statx = undefined;
    const stat_rc = linux.statx(linux.AT.FDCWD, "/proc/self/ns/user", 0, .{ .INO = true }, &namespace);
    out[0] = limit.cur;
    out[1] = @as(u64, data[1].effective) << 32 | data[0].effective;
    out[2] = if (sys.result(stat_rc) == 0 and namespace.mask.INO) namespace.ino else 0;
    return 0;
}
