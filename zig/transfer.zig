//! Data movement: sendmsg/recvmsg over caller-built iovec arrays. Always non-blocking
//! (MSG_DONTWAIT) and never raising SIGPIPE; waiting is the caller's choice (zc_poll).
const sys = @import("sys.zig");
const linux = sys.linux;

const Iovec = extern struct { base: usize, len: usize };

/// Sends `count` iovecs; `zerocopy != 0` adds MSG_ZEROCOPY. Returns bytes sent or -errno.
export fn zc_sendv(fd: i32, iov: [*]const Iovec, count: u32, zerocopy: u32) i32 {
    var flags: u32 = linux.MSG.NOSIGNAL | linux.MSG.DONTWAIT;
    if (zerocopy != 0) flags |= linux.MSG.ZEROCOPY;
    const msg = linux.msghdr_const{
        .name = null,
        .namelen = 0,
        .iov = @ptrCast(iov),
        .iovlen = count,
        .control = null,
        .controllen = 0,
        .flags = 0,
    };
    return sys.result32(linux.sendmsg(fd, &msg, flags));
}

/// Receives into `count` iovecs. Returns bytes received (0 = orderly EOF) or -errno.
export fn zc_recvv(fd: i32, iov: [*]const Iovec, count: u32) i32 {
    var msg = linux.msghdr{
        .name = null,
        .namelen = 0,
        .iov = @ptrCast(@constCast(iov)),
        .iovlen = count,
        .control = null,
        .controllen = 0,
        .flags = 0,
    };
    return sys.result32(linux.recvmsg(fd, &msg, linux.MSG.DONTWAIT));
}
