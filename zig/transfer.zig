//! Data movement: sendmsg/recvmsg over caller-built iovec arrays. Always non-blocking
//! (MSG_DONTWAIT) and never raising SIGPIPE; waiting is the caller's choice: zc_poll, or
//! the `_full` variants, which wait in poll(2) themselves (for a thread that has nothing
//! else to do, e.g. a multifd channel Worker: its whole read or write is one FFI call).
const std = @import("std");
const sys = @import("sys.zig");
const linux = sys.linux;
const pages = @import("pages.zig");
const pageLength = pages.pageLength;
const MADV_POPULATE_WRITE = @import("memory.zig").MADV_POPULATE_WRITE;
const MADV_POPULATE_READ = @import("memory.zig").MADV_POPULATE_READ;

const Iovec = extern struct { base: usize, len: usize };

/// Appends the range at `base` of `length` bytes to the iovecs `iov[first..n)`, merged into
/// the last one when it follows it; returns the new `n`, or null when it needs an iovec
/// more than `iov` has.
fn appendRange(iov: []Iovec, first: usize, n: usize, base: usize, length: usize) ?usize {
    if (n > first and iov[n - 1].base + iov[n - 1].len == base) {
        iov[n - 1].len += length;
        return n;
    }
    if (n == iov.len) return null;
    iov[n] = .{ .base = base, .len = length };
    return n + 1;
}

/// Faults the ranges in ahead of a copy from them (`advice` MADV_POPULATE_READ) or into
/// them (MADV_POPULATE_WRITE): one madvise a range instead of a fault a page. Best effort:
/// on failure the copy takes the faults.
fn populateRanges(ranges: []const Iovec, advice: u32) void {
    for (ranges) |range| _ = linux.madvise(@ptrFromInt(range.base), range.len, advice);
}

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

/// The kernel's per-call limit on iovecs (UIO_MAXIOV).
const iov_max = 1024;

/// What the `_full` variants return besides -errno: every byte moved (or, reading, the
/// peer ended the stream first), or a wait without progress outlasted `timeout_ms`.
/// zc_recv_wire_pages adds `invalid_offset` and `payload_mismatch`: a packet's offsets break
/// its format's rules, nothing more read.
/// zc_send_run adds `stopped`: it returned before its round ended (an abort, or its list of
/// zero pages is full), the caller looks and calls again.
const Full = enum(i32) { done = 0, timed_out = 1, invalid_offset = 2, payload_mismatch = 3, stopped = 4 };

/// Moves every byte of `count` iovecs: sendmsg (`send`) or recvmsg until done, waiting in
/// poll(2) for up to `timeout_ms` (-1: no limit) whenever the socket has no room or no
/// data (a blocking socket waits in recvmsg first, up to its SO_RCVTIMEO: a stall is then
/// reported after one to two times the timeout). Consumes `iov` in place (the caller reloads it for the next call). Returns a
/// `Full` or -errno; `moved.*` gets the bytes moved either way. A read stops at EOF
/// (`done` with fewer bytes); a shutdown(2) from another thread ends a wait at once.
fn moveFull(comptime send: bool, fd: i32, iov: [*]Iovec, count: u32, timeout_ms: i32, moved: *u64) i32 {
    var first: usize = 0;
    var total: u64 = 0;
    defer moved.* = total;
    while (first < count and iov[first].len == 0) first += 1;
    while (first < count) {
        var msg = linux.msghdr{
            .name = null,
            .namelen = 0,
            .iov = @ptrCast(iov + first),
            .iovlen = @min(count - first, iov_max),
            .control = null,
            .controllen = 0,
            .flags = 0,
        };
        // Reading: MSG_WAITALL, without MSG_DONTWAIT. On a non-blocking socket that returns
        // what is there, as ever; on one made blocking (socket.zig blockingReceive) it waits
        // in the kernel until every byte arrived, up to SO_RCVTIMEO.
        const rc = sys.result(if (send)
            linux.sendmsg(fd, @ptrCast(&msg), linux.MSG.NOSIGNAL | linux.MSG.DONTWAIT)
        else
            linux.recvmsg(fd, &msg, linux.MSG.WAITALL));
        if (rc > 0) {
            var left: usize = @intCast(rc);
            total += left;
            while (first < count and left >= iov[first].len) : (first += 1) left -= iov[first].len;
            if (left > 0) {
                iov[first].base += left;
                iov[first].len -= left;
            }
            continue;
        }
        if (rc == 0 and !send) return @intFromEnum(Full.done); // EOF
        const errno: linux.E = @enumFromInt(-rc);
        switch (errno) {
            .INTR => continue,
            .AGAIN => {},
            else => return @intCast(rc),
        }
        const events: i16 = if (send) linux.POLL.OUT else linux.POLL.IN;
        var pfd = [1]linux.pollfd{.{ .fd = fd, .events = events, .revents = 0 }};
        const ready = sys.result(linux.poll(&pfd, 1, timeout_ms));
        if (ready == 0) return @intFromEnum(Full.timed_out);
        if (ready < 0 and ready != -@as(isize, @intFromEnum(linux.E.INTR))) return @intCast(ready);
        // Ready, or POLLERR/POLLHUP: the next call reports the error or the end.
    }
    return @intFromEnum(Full.done);
}

/// Receives until `count` iovecs are full or the peer ends the stream; see moveFull.
export fn zc_recv_full(fd: i32, iov: [*]Iovec, count: u32, timeout_ms: i32, moved: *u64) i32 {
    return moveFull(false, fd, iov, count, timeout_ms, moved);
}

/// Sends every byte of `count` iovecs (never MSG_ZEROCOPY); see moveFull.
export fn zc_send_full(fd: i32, iov: [*]Iovec, count: u32, timeout_ms: i32, moved: *u64) i32 {
    return moveFull(true, fd, iov, count, timeout_ms, moved);
}

/// How zc_recv_wire_pages and zc_recv_wire_run find and check a packet's offsets (`layout` bits).
const Layout = struct {
    /// The offsets are still in the socket, right before the pages: received into `wire` +
    /// `at` first (the module's packets); without it they are in `wire` already (QEMU's header).
    const offsets_in_socket: u32 = 1;
    /// The module's rules (pages.zig decodeOrderedOffsets: each list ascending, no page in
    /// both, a short last page allowed), and the pages must hold exactly `payload` bytes;
    /// without it QEMU's (decodeBlockOffsets: whole pages inside the memory, any order).
    const ordered: u32 = 2;
};

/// One data packet of a format whose packets list their pages' offsets (big-endian u64)
/// before the pages' data — QEMU's multifd packets, the module's own — as one FFI call, the
/// crossing a packet costs from cold caches paid once instead of three or four times:
/// receives the offsets first when they are still in the socket (`layout`), decodes `count`
/// of them from `wire` + `at` into `offsets` and checks them by the layout's rules (the first
/// that breaks one: nothing more read, `invalid_offset` and `outcome[3]` as the rule's
/// decode returns it; pages that do not hold `payload` bytes under the ordered rule:
/// `payload_mismatch`, `outcome[1]` what they hold), receives the data of the first
/// `normal_count` (recvPages; the rest are the caller's: zero pages), then, when
/// they all arrived, reads the next packet's first `ahead_length` bytes into `wire` itself
/// (from byte 0: the offsets are decoded by then; 0: no read ahead, e.g. after a packet that
/// ends a sync round, where the next bytes may come only after the barrier). Returns a
/// `Full` or -errno; `outcome[0]` the page bytes received, `outcome[1]` the bytes the pages
/// hold (fewer received with `done`: the peer ended the stream), `outcome[2]` the bytes read ahead (0
/// with `done`: the peer ended the stream between packets), `outcome[4]` the offset bytes received.
export fn zc_recv_wire_pages(fd: i32, base_number: sys.Number, size_number: sys.Number, page_size_number: sys.Number, wire: [*]u8, at: u32, count: u32, normal_count: u32, offsets: [*]f64, layout: u32, payload_number: sys.Number, populate: u32, timeout_ms: i32, ahead_length: u32, outcome: [*]f64) i32 {
    for (0..5) |i| outcome[i] = 0;
    const memory = Memory.of(base_number, size_number, page_size_number) orelse return sys.invalid_number;
    if (normal_count > count) return sys.invalid_number;
    const payload = sys.whole(payload_number) orelse return sys.invalid_number;
    var got = PacketRead{};
    defer {
        outcome[0] = @floatFromInt(got.received);
        outcome[1] = @floatFromInt(got.asked);
        outcome[3] = @floatFromInt(got.rejected);
        outcome[4] = @floatFromInt(got.offset_bytes);
    }
    const rc = receivePacket(fd, memory, wire + at, count, normal_count, offsets, layout, payload, populate, timeout_ms, &got);
    if (rc != @intFromEnum(Full.done) or !got.complete(count, layout) or ahead_length == 0) return rc;
    var iov = [1]Iovec{.{ .base = @intFromPtr(wire), .len = ahead_length }};
    var moved: u64 = 0;
    defer outcome[2] = @floatFromInt(moved);
    return moveFull(false, fd, &iov, 1, timeout_ms, &moved);
}

/// What receivePacket did: offset bytes received (offsets in the socket), page bytes
/// received and the bytes the pages hold (with `payload_mismatch`: what they hold), and the
/// offset that broke the layout's rule (`invalid_offset`: as the rule's decode returns it).
const PacketRead = struct {
    offset_bytes: u64 = 0,
    received: u64 = 0,
    asked: u64 = 0,
    rejected: i32 = 0,

    /// Whether every byte of the packet arrived (`done` with fewer: the peer ended the stream).
    fn complete(got: PacketRead, count: u32, layout: u32) bool {
        const offsets_done = layout & Layout.offsets_in_socket == 0 or got.offset_bytes == @as(u64, count) * 8;
        return offsets_done and got.received == got.asked;
    }
};

/// One packet after its header: its `count` offsets received into `offsets_wire` when they
/// are still in the socket, decoded into `offsets` and checked by `layout`'s rules (ordered:
/// the pages with data must hold `payload` bytes), then the data of its first
/// `normal_count` pages received into place (recvPages). Returns a `Full` or -errno.
fn receivePacket(fd: i32, memory: Memory, offsets_wire: [*]u8, count: u32, normal_count: u32, offsets: [*]f64, layout: u32, payload: u64, populate: u32, timeout_ms: i32, got: *PacketRead) i32 {
    if (layout & Layout.offsets_in_socket != 0) {
        var iov = [1]Iovec{.{ .base = @intFromPtr(offsets_wire), .len = @as(usize, count) * 8 }};
        const rc = moveFull(false, fd, &iov, 1, timeout_ms, &got.offset_bytes);
        if (rc != @intFromEnum(Full.done) or got.offset_bytes < @as(u64, count) * 8) return rc;
    }
    var asked: u64 = 0;
    if (layout & Layout.ordered != 0) {
        const valid = pages.decodeOrderedOffsets(offsets_wire, count, normal_count, memory.page_size, memory.size, offsets);
        if (valid != count) {
            got.rejected = valid;
            return @intFromEnum(Full.invalid_offset);
        }
        for (0..normal_count) |i| asked += pageLength(@intFromFloat(offsets[i]), memory.page_size, memory.size);
        if (asked != payload) {
            got.asked = asked;
            return @intFromEnum(Full.payload_mismatch);
        }
    } else {
        const valid = pages.decodeBlockOffsets(offsets_wire, count, memory.page_size, memory.size, offsets);
        if (valid < count) {
            got.rejected = @intCast(valid);
            return @intFromEnum(Full.invalid_offset);
        }
        asked = normal_count * memory.page_size; // whole pages, each inside the memory
    }
    return recvPages(fd, memory, offsets, normal_count, asked, populate, timeout_ms, &got.received, &got.asked);
}

/// The rule by which zc_recv_wire_run goes on from a packet to the next without returning:
/// u32 words the caller's format fills in (zig/ knows no format; src/qemu/qemu_codec.ts
/// makes QEMU's, src/multifd/plain_codec.ts the module's). A header is `header_length` bytes;
/// its offsets (big-endian u64) are at `offsets_at`, inside the header or, with
/// `Layout.offsets_in_socket`, right after it in the socket (then `offsets_at` is
/// `header_length`), checked by `layout`'s rules as zc_recv_wire_pages does (ordered: the
/// pages with data hold exactly the big-endian u32 at `payload_at`). A following header
/// continues the run when every byte before `offsets_at` equals the first header's — the one
/// the caller validated — outside [`vary_from`, `vary_to`), where its two counts are: pages
/// with data (big-endian u32 at `normal_at`) and zero pages (at `zero_at`), together 1 to
/// `max_count`; and, unless `sequence_at` is `no_field`, the big-endian u64 there is the
/// previous header's plus one.
const RunRule = extern struct {
    header_length: u32,
    offsets_at: u32,
    vary_from: u32,
    vary_to: u32,
    normal_at: u32,
    zero_at: u32,
    max_count: u32,
    /// Packets one call receives at most, so the caller's counters and abort checks keep up.
    max_packets: u32,
    layout: u32,
    payload_at: u32,
    sequence_at: u32,

    /// Longest fixed part (before the offsets) a rule may have: the copy of the first header's.
    const max_fixed = 512;
    /// `payload_at` or `sequence_at` of a format without that field.
    const no_field = std.math.maxInt(u32);

    fn valid(rule: *const RunRule) bool {
        const in_socket = rule.layout & Layout.offsets_in_socket != 0;
        const offsets_fit = if (in_socket)
            rule.offsets_at == rule.header_length
        else
            rule.offsets_at + @as(u64, rule.max_count) * 8 <= rule.header_length;
        return rule.offsets_at <= max_fixed and rule.vary_to <= rule.offsets_at and offsets_fit and
            rule.layout & ~(Layout.offsets_in_socket | Layout.ordered) == 0 and
            rule.varies(rule.normal_at, 4) and rule.varies(rule.zero_at, 4) and
            (rule.layout & Layout.ordered == 0 or rule.varies(rule.payload_at, 4)) and
            (rule.sequence_at == no_field or rule.varies(rule.sequence_at, 8)) and
            rule.max_count > 0 and rule.max_packets > 0;
    }

    /// Whether the `length`-byte field at `at` lies within the bytes a following header may change.
    fn varies(rule: *const RunRule, at: u32, length: u32) bool {
        return at >= rule.vary_from and @as(u64, at) + length <= rule.vary_to;
    }

    const Counts = struct { normal: u32, total: u64 };

    /// The header's pages with data, and those with its zero pages.
    fn counts(rule: *const RunRule, wire: [*]const u8) Counts {
        const normal = std.mem.readInt(u32, wire[rule.normal_at..][0..4], .big);
        return .{ .normal = normal, .total = @as(u64, normal) + std.mem.readInt(u32, wire[rule.zero_at..][0..4], .big) };
    }

    /// What the header's pages with data must hold (the ordered layout's).
    fn payload(rule: *const RunRule, wire: [*]const u8) u64 {
        if (rule.layout & Layout.ordered == 0) return 0;
        return std.mem.readInt(u32, wire[rule.payload_at..][0..4], .big);
    }

    /// The header's sequence number (0 without one).
    fn sequence(rule: *const RunRule, wire: [*]const u8) u64 {
        if (rule.sequence_at == no_field) return 0;
        return std.mem.readInt(u64, wire[rule.sequence_at..][0..8], .big);
    }

    /// Whether the header in `wire` continues the run whose first header's fixed part is
    /// `first`, after a header whose sequence number was `previous`.
    fn continues(rule: *const RunRule, first: []const u8, previous: u64, wire: [*]const u8) bool {
        const n = rule.counts(wire).total;
        return n > 0 and n <= rule.max_count and
            (rule.sequence_at == no_field or rule.sequence(wire) == previous +% 1) and
            std.mem.eql(u8, first[0..rule.vary_from], wire[0..rule.vary_from]) and
            std.mem.eql(u8, first[rule.vary_to..rule.offsets_at], wire[rule.vary_to..rule.offsets_at]);
    }
};

/// Whether the header at `header` continues a run whose first header — and, for a sequence
/// number, the header before it — is at `first`, by `rule` (1 or 0; -EINVAL for a rule that
/// is not valid): zc_recv_wire_run's test, alone, so that it can be checked against the
/// format's own parser (tests/qemu_wire_fuzz.test.ts, tests/wire_fuzz.test.ts).
export fn zc_wire_run_continues(rule: *const RunRule, first: [*]const u8, header: [*]const u8) i32 {
    if (!rule.valid()) return sys.invalid_number;
    return @intFromBool(rule.continues(first[0..rule.offsets_at], rule.sequence(first), header));
}

/// zc_recv_wire_pages for a run of packets in one call: the first header is in `wire`,
/// validated by the caller; for each packet the offsets are received (when in the socket),
/// decoded and checked, the pages with data received into place, the zero pages zero-filled
/// (zero pages already zero left untouched), and the next header read ahead into `wire`. The
/// run goes on while that header continues it (`rule`); it returns with a header the caller
/// must parse in `wire`, after `max_packets`, at the end of the stream, or at the first
/// error. With its offsets in the socket, `wire` must hold `offsets_at` + 8 × `max_count`
/// bytes (the caller checks). Returns a `Full` or -errno. `outcome`: [0] the bytes received
/// of the last step that read (a packet's offsets, or its pages), [1] the bytes that step
/// asked for (with `payload_mismatch`: what the pages hold), [2] the bytes read ahead after
/// the last packet (0 with `done`: the peer ended the stream between packets), [3] the
/// offset that broke the rule as its decode returns it (`invalid_offset`, nothing more
/// read), [4] every byte read, [5] packets whose pages all arrived, [6] their pages with
/// data, [7] their zero pages, [8] the bytes their pages with data hold.
export fn zc_recv_wire_run(fd: i32, base_number: sys.Number, size_number: sys.Number, page_size_number: sys.Number, wire: [*]u8, rule: *const RunRule, offsets: [*]f64, populate: u32, sparse_fd: i32, timeout_ms: i32, outcome: [*]f64) i32 {
    for (0..9) |i| outcome[i] = 0;
    const memory = Memory.of(base_number, size_number, page_size_number) orelse return sys.invalid_number;
    if (!rule.valid()) return sys.invalid_number;
    var first: [RunRule.max_fixed]u8 = undefined;
    @memcpy(first[0..rule.offsets_at], wire[0..rule.offsets_at]);
    var packet = rule.counts(wire);
    if (packet.total > rule.max_count) return sys.invalid_number;
    var read: u64 = 0;
    var packets: u64 = 0;
    var normal_pages: u64 = 0;
    var zero_pages: u64 = 0;
    var payload_bytes: u64 = 0;
    defer {
        outcome[4] = @floatFromInt(read);
        outcome[5] = @floatFromInt(packets);
        outcome[6] = @floatFromInt(normal_pages);
        outcome[7] = @floatFromInt(zero_pages);
        outcome[8] = @floatFromInt(payload_bytes);
    }
    while (true) {
        const count: u32 = @intCast(packet.total); // ≤ max_count: checked above, or by `continues`
        const normal = packet.normal;
        var got = PacketRead{};
        const rc = receivePacket(fd, memory, wire + rule.offsets_at, count, normal, offsets, rule.layout, rule.payload(wire), populate, timeout_ms, &got);
        read += got.offset_bytes + got.received;
        const offsets_step = got.asked == 0 and rule.layout & Layout.offsets_in_socket != 0 and
            got.offset_bytes < @as(u64, count) * 8;
        outcome[0] = @floatFromInt(if (offsets_step) got.offset_bytes else got.received);
        outcome[1] = @floatFromInt(if (offsets_step) @as(u64, count) * 8 else got.asked);
        outcome[3] = @floatFromInt(got.rejected);
        if (rc != @intFromEnum(Full.done) or !got.complete(count, rule.layout)) return rc;
        const zeroed = pages.zeroPages(memory.base, memory.size, memory.page_size, offsets + normal, count - normal, populate, sparse_fd);
        if (zeroed < 0) return zeroed;
        packets += 1;
        normal_pages += normal;
        zero_pages += count - normal;
        payload_bytes += got.asked;
        const sequence = rule.sequence(wire);
        var iov = [1]Iovec{.{ .base = @intFromPtr(wire), .len = rule.header_length }};
        var moved: u64 = 0;
        const ahead = moveFull(false, fd, &iov, 1, timeout_ms, &moved);
        read += moved;
        outcome[2] = @floatFromInt(moved);
        if (ahead != @intFromEnum(Full.done) or moved < rule.header_length) return ahead;
        if (packets == rule.max_packets or !rule.continues(first[0..rule.offsets_at], sequence, wire)) return ahead;
        packet = rule.counts(wire);
    }
}

/// How zc_send_run writes a data packet's fields into the caller's header template (u32
/// words the caller's format fills in; zig/ knows no format: src/multifd/plain_codec.ts
/// makes the module's, src/qemu/qemu_codec.ts QEMU's). The template is `header_length`
/// bytes; a packet's offsets (big-endian u64, the pages with data, then any zero pages it
/// lists) go at `offsets_at`, inside the header or, when that is `header_length`, right
/// after it (sent with it); its number (big-endian u64, one more each packet) at
/// `number_at`, its counts of pages with data and of zero pages (big-endian u32) at
/// `normal_at` and `zero_at`, and the bytes its pages with data hold at `payload_at`.
const SendRule = extern struct {
    header_length: u32,
    offsets_at: u32,
    number_at: u32,
    normal_at: u32,
    zero_at: u32,
    payload_at: u32,
    max_count: u32,

    fn valid(rule: *const SendRule) bool {
        const offsets_fit = rule.offsets_at == rule.header_length or
            rule.offsets_at + @as(u64, rule.max_count) * 8 <= rule.header_length;
        return offsets_fit and rule.max_count > 0 and rule.max_count <= max_send_count and
            @as(u64, rule.number_at) + 8 <= rule.header_length and @as(u64, rule.normal_at) + 4 <= rule.header_length and
            @as(u64, rule.zero_at) + 4 <= rule.header_length and @as(u64, rule.payload_at) + 4 <= rule.header_length;
    }
};

/// Most pages zc_send_run puts in a packet (the module's protocol limit).
const max_send_count = 1024;

/// Where zc_send_run's zero pages go (`zero_pages`): not looked for (every page is sent),
/// listed in the packet after the pages with data, or to the caller's list, not in a packet.
const ZeroPages = enum(u32) { not_scanned = 0, in_packet = 1, to_caller = 2 };

/// A round's packets sent in one call, as a channel Worker's loop sends them one by one: it
/// claims packet after packet from the shared cursor (`control[cursor_index]`, atomically:
/// the round's other channels claim from it too) until the round's ⌈`page_count` /
/// `per_packet`⌉ packets are gone; packet k carries pages k·`per_packet` … of the round
/// (`round_pages[i]` when `use_pages`, else the memory's pages in order), split into pages
/// with data and zero pages (`zero_pages`), with its fields and offsets written into `head`
/// by `rule`, and sent as one sendmsg (head, then the pages with data straight from the
/// memory; pages that follow each other as one iovec; a file's pages faulted in first with
/// `populate`, best effort; the pages in a hole of `sparse_fd`, if one, are zero pages
/// without being read) that waits in poll(2) when the socket is full, up to
/// `timeout_ms`. A packet whose pages are all zero and go to the caller is not sent. Returns
/// `done` once the cursor ran out, `stopped` when the abort flag (`control[abort_index]`) is
/// up or `zero_out` may not have room for another packet's zero pages (nothing claimed
/// then), `timed_out` / -errno from a send, or -EINVAL for a page outside the memory (that
/// packet claimed, nothing of it sent). `io`: [0] the next packet's number (in and out), [1]
/// packets sent, [2] their pages with data, [3] zero pages found, [4] the bytes the pages
/// with data hold, [5] offsets in `zero_out` (in and out: it has `zero_capacity`), [6] bytes
/// written, [7] the bytes the failed send left unwritten.
export fn zc_send_run(fd: i32, base_number: sys.Number, size_number: sys.Number, page_size_number: sys.Number, round_pages: [*]const u32, use_pages: u32, page_count: u32, per_packet: u32, control: [*]i32, cursor_index: u32, abort_index: u32, head: [*]u8, rule: *const SendRule, zero_pages: u32, zero_out: [*]f64, zero_capacity: u32, populate: u32, sparse_fd: i32, timeout_ms: i32, io: [*]f64) i32 {
    const memory = Memory.of(base_number, size_number, page_size_number) orelse return sys.invalid_number;
    var number = sys.whole(io[0]) orelse return sys.invalid_number;
    const zeros_listed = sys.whole(io[5]) orelse return sys.invalid_number;
    if (!rule.valid() or per_packet == 0 or per_packet > rule.max_count or zero_pages > 2 or zeros_listed > zero_capacity) {
        return sys.invalid_number;
    }
    var zero_count: u32 = @intCast(zeros_listed);
    const mode: ZeroPages = @enumFromInt(zero_pages);
    for (1..5) |i| io[i] = 0;
    io[6] = 0;
    io[7] = 0;
    var written: u64 = 0;
    defer {
        io[0] = @floatFromInt(number);
        io[5] = @floatFromInt(zero_count);
        io[6] = @floatFromInt(written);
    }
    const packets: u32 = @intCast((@as(u64, page_count) + per_packet - 1) / per_packet);
    var offsets: [max_send_count]f64 = undefined;
    var normal: [max_send_count]f64 = undefined;
    var zero: [max_send_count]f64 = undefined;
    var iov: [1 + max_send_count]Iovec = undefined;
    while (true) {
        if (@atomicLoad(i32, &control[abort_index], .seq_cst) != 0) return @intFromEnum(Full.stopped);
        if (mode == .to_caller and zero_capacity - zero_count < per_packet) return @intFromEnum(Full.stopped);
        const claimed = @atomicRmw(i32, &control[cursor_index], .Add, 1, .seq_cst);
        if (claimed < 0 or claimed >= packets) return @intFromEnum(Full.done);
        const first: u32 = @as(u32, @intCast(claimed)) * per_packet;
        const count = @min(per_packet, page_count - first);
        for (0..count) |i| {
            const page: u64 = if (use_pages != 0) round_pages[first + i] else first + i;
            // The callers check their page lists; a page outside the memory would send what lies beyond it.
            if (page * memory.page_size >= memory.size) return sys.invalid_number;
            offsets[i] = @floatFromInt(page * memory.page_size);
        }
        const zeros: u32 = if (mode == .not_scanned)
            0
        else
            pages.splitZero(memory.base, memory.size, memory.page_size, &offsets, count, &normal, &zero, sparse_fd);
        const data: []const f64 = if (mode == .not_scanned) offsets[0..count] else normal[0 .. count - zeros];
        io[3] += @floatFromInt(zeros);
        if (mode == .to_caller) {
            @memcpy(zero_out[zero_count..][0..zeros], zero[0..zeros]);
            zero_count += zeros;
            if (data.len == 0) continue;
        }
        const listed: []const f64 = if (mode == .in_packet) zero[0..zeros] else zero[0..0];
        // The header's fields and offsets, then the head and the pages as one sendmsg.
        std.mem.writeInt(u64, head[rule.number_at..][0..8], number, .big);
        std.mem.writeInt(u32, head[rule.normal_at..][0..4], @intCast(data.len), .big);
        if (mode == .in_packet) std.mem.writeInt(u32, head[rule.zero_at..][0..4], zeros, .big);
        for (data, 0..) |offset, i| std.mem.writeInt(u64, head[rule.offsets_at + i * 8 ..][0..8], @intFromFloat(offset), .big);
        for (listed, data.len..) |offset, i| std.mem.writeInt(u64, head[rule.offsets_at + i * 8 ..][0..8], @intFromFloat(offset), .big);
        const head_length = if (rule.offsets_at == rule.header_length) rule.header_length + 8 * (data.len + listed.len) else rule.header_length;
        iov[0] = .{ .base = @intFromPtr(head), .len = head_length };
        var n: usize = 1;
        var payload: u64 = 0;
        for (data) |offset_number| {
            const offset: u64 = @intFromFloat(offset_number);
            const length = pageLength(offset, memory.page_size, memory.size);
            payload += length;
            n = appendRange(&iov, 1, n, memory.base + offset, length) orelse unreachable; // 1 + max_send_count iovecs
        }
        std.mem.writeInt(u32, head[rule.payload_at..][0..4], @intCast(payload), .big);
        if (populate != 0) populateRanges(iov[1..n], MADV_POPULATE_READ);
        number += 1;
        var moved: u64 = 0;
        const rc = moveFull(true, fd, &iov, @intCast(n), timeout_ms, &moved);
        written += moved;
        if (rc != @intFromEnum(Full.done)) {
            io[7] = @floatFromInt(head_length + payload - moved);
            return rc;
        }
        io[1] += 1;
        io[2] += @floatFromInt(data.len);
        io[4] += @floatFromInt(payload);
    }
}

/// A memory the page loops receive into: its base address, size and page size, from the
/// Numbers the TypeScript layers pass (null when one is not whole, or the page size is 0).
const Memory = struct {
    base: u64,
    size: u64,
    page_size: u64,

    fn of(base_number: sys.Number, size_number: sys.Number, page_size_number: sys.Number) ?Memory {
        const memory = Memory{
            .base = sys.whole(base_number) orelse return null,
            .size = sys.whole(size_number) orelse return null,
            .page_size = sys.whole(page_size_number) orelse return null,
        };
        return if (memory.page_size == 0) null else memory;
    }
};

/// Receives the data of the pages at `offsets[0..count)` (checked already: each a page of
/// the memory; `asked`: the bytes they hold, the last page of the memory possibly short)
/// straight into their places: pages that follow each other as one iovec, up to `iov_max`
/// iovecs a batch, each batch read in full as moveFull does. `populate != 0` first faults a
/// batch's ranges in for writing (MADV_POPULATE_WRITE, one madvise per range instead of a
/// fault per page; best effort: on failure the copy takes the faults). Returns a `Full` or
/// -errno; `received_out.*` gets the bytes received, `asked_out.*` `asked`.
fn recvPages(fd: i32, memory: Memory, offsets: [*]const f64, count: u32, asked: u64, populate: u32, timeout_ms: i32, received_out: *u64, asked_out: *u64) i32 {
    const base = memory.base;
    var received: u64 = 0;
    asked_out.* = asked;
    defer received_out.* = received;
    var iov: [iov_max]Iovec = undefined;
    var next: usize = 0;
    while (next < count) {
        var n: usize = 0;
        var batch: u64 = 0;
        while (next < count) : (next += 1) {
            const offset: u64 = @intFromFloat(offsets[next]);
            const length = pageLength(offset, memory.page_size, memory.size);
            n = appendRange(&iov, 0, n, base + offset, length) orelse break; // a full batch: this page starts the next
            batch += length;
        }
        if (populate != 0) populateRanges(iov[0..n], MADV_POPULATE_WRITE);
        var moved: u64 = 0;
        const rc = moveFull(false, fd, &iov, @intCast(n), timeout_ms, &moved);
        received += moved;
        if (rc != @intFromEnum(Full.done) or moved < batch) return rc;
    }
    return @intFromEnum(Full.done);
}
