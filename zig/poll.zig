//! Readiness waits and the eventfd that wakes a blocked poll from another thread.
const sys = @import("sys.zig");
const linux = sys.linux;

/// Polls `count` struct pollfd entries (the caller's buffer) for up to `timeout_ms`
/// (-1 = no limit). Returns the number of ready entries, 0 on timeout, or -errno.
export fn zc_poll(fds: [*]linux.pollfd, count: u32, timeout_ms: i32) i32 {
    return sys.result32(linux.poll(fds, count, timeout_ms));
}

/// One fd: returns its revents (0 on timeout) or -errno.
export fn zc_poll_one(fd: i32, events: u32, timeout_ms: i32) i32 {
    var pfd = [1]linux.pollfd{.{ .fd = fd, .events = @bitCast(@as(u16, @truncate(events))), .revents = 0 }};
    const rc = sys.result32(linux.poll(&pfd, 1, timeout_ms));
    if (rc <= 0) return rc;
    return @as(u16, @bitCast(pfd[0].revents));
}

export fn zc_eventfd() i32 {
    return sys.result32(linux.eventfd(0, linux.EFD.CLOEXEC | linux.EFD.NONBLOCK));
}

export fn zc_eventfd_signal(fd: i32) i32 {
    const one: u64 = 1;
    return sys.result32(linux.write(fd, @ptrCast(&one), 8));
}

/// Resets the counter; -EAGAIN when it was already zero.
export fn zc_eventfd_clear(fd: i32) i32 {
    var value: u64 = 0;
    return sys.result32(linux.read(fd, @ptrCast(&value), 8));
}
