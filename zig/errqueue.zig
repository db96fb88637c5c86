//! Draining the socket error queue, where the kernel reports MSG_ZEROCOPY completions.
const sys = @import("sys.zig");
const linux = sys.linux;

/// struct sock_extended_err from <linux/errqueue.h>.
const ExtendedError = extern struct {
    errno: u32,
    origin: u8,
    type: u8,
    code: u8,
    pad: u8,
    info: u32,
    data: u32,
};

/// One record per error-queue message, four u32 each, in the caller's buffer:
///   [0] first send id (ee_info), [1] last send id (ee_data), inclusive, may wrap,
///   [2] ee_code (bit 0 = SO_EE_CODE_ZEROCOPY_COPIED) | ee_origin << 8,
///   [3] ee_errno (0 for a completion; otherwise an error the kernel reported).
/// Reads until the queue is empty or `capacity` records are filled; never blocks.
/// Returns the number of records, or -errno.
export fn zc_drain_errqueue(fd: i32, out: [*]u32, capacity: u32) i32 {
    var filled: u32 = 0;
    var control: [128]u8 align(8) = undefined;
    while (filled < capacity) {
        var msg = linux.msghdr{
            .name = null,
            .namelen = 0,
            .iov = undefined,
            .iovlen = 0,
            .control = &control,
            .controllen = control.len,
            .flags = 0,
        };
        const rc = sys.result(linux.recvmsg(fd, &msg, linux.MSG.ERRQUEUE | linux.MSG.DONTWAIT));
        if (rc < 0) {
            if (rc == -@as(isize, @intFromEnum(linux.E.AGAIN))) break;
            return @intCast(rc);
        }
        const ee = firstExtendedError(control[0..@min(msg.controllen, control.len)]) orelse continue;
        const rec = out[filled * 4 ..][0..4];
        rec[0] = ee.info;
        rec[1] = ee.data;
        rec[2] = @as(u32, ee.code) | (@as(u32, ee.origin) << 8);
        rec[3] = ee.errno;
        filled += 1;
    }
    return @intCast(filled);
}

/// The IP_RECVERR / IPV6_RECVERR control message's payload, if there is one.
fn firstExtendedError(control: []align(8) const u8) ?ExtendedError {
    var offset: usize = 0;
    const header_len = @sizeOf(linux.cmsghdr);
    while (offset + header_len <= control.len) {
        const hdr: *const linux.cmsghdr = @ptrCast(@alignCast(control[offset..].ptr));
        if (hdr.len < header_len or offset + hdr.len > control.len) return null;
        const is_v4 = hdr.level == linux.SOL.IP and hdr.type == linux.IP.RECVERR;
        const is_v6 = hdr.level == linux.SOL.IPV6 and hdr.type == linux.IPV6.RECVERR;
        if ((is_v4 or is_v6) and hdr.len >= header_len + @sizeOf(ExtendedError)) {
            const payload: *align(1) const ExtendedError = @ptrCast(control[offset + header_len ..].ptr);
            return payload.*;
        }
        offset += (hdr.len + 7) & ~@as(usize, 7);
    }
    return null;
}
