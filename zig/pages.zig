//! A packet's page list, at memory speed: the loops over every page of a packet that would
//! otherwise run in JS in each channel Worker (the offsets between the wire's big-endian
//! u64 and JS numbers, merging contiguous pages into iovec ranges, finding and filling
//! zero pages). Offsets cross the FFI as f64 (exact below 2^53), as the TypeScript layers
//! hold them; every function takes offsets the caller produced or this file validated.
const std = @import("std");
const sys = @import("sys.zig");
const MADV_POPULATE_WRITE = @import("memory.zig").MADV_POPULATE_WRITE;
const SEEK_DATA = @import("memory.zig").SEEK_DATA;
const SEEK_HOLE = @import("memory.zig").SEEK_HOLE;

/// The wire's offsets, big-endian u64 (docs/PROTOCOL.md).
fn wireOffset(wire: [*]const u8, i: usize) u64 {
    return std.mem.readInt(u64, wire[i * 8 ..][0..8], .big);
}

/// Decodes `count` big-endian u64 offsets from `wire` into `out`: the first `normal_count`
/// are a packet's pages with data, the rest its zero pages. Each must be a multiple of
/// `page_size`, below `region_size`, and above the one before in its list; no offset may be
/// in both lists. Returns `count` when all hold; the index of the first offset that breaks
/// one of the first three rules; or -(1 + n) when normal page n is also a zero page. A
/// `page_size` or `region_size` that is not a whole number (sys.whole) counts as 0: offset 0 fails.
export fn zc_offsets_decode(wire: [*]const u8, count: u32, normal_count: u32, page_size_number: sys.Number, region_size_number: sys.Number, out: [*]f64) i32 {
    const page_size = sys.whole(page_size_number) orelse 0;
    const region_size = sys.whole(region_size_number) orelse 0;
    if (page_size == 0 or normal_count > count) return 0;
    return decodeOrderedOffsets(wire, count, normal_count, page_size, region_size, out);
}

/// zc_offsets_decode's rules and loop (also zc_recv_wire_pages'), same result; `page_size`
/// > 0, `normal_count` ≤ `count`.
pub fn decodeOrderedOffsets(wire: [*]const u8, count: u32, normal_count: u32, page_size: u64, region_size: u64, out: [*]f64) i32 {
    var previous: u64 = 0;
    for (0..count) |i| {
        const offset = wireOffset(wire, i);
        const list_start = i == 0 or i == normal_count;
        if (offset % page_size != 0 or offset >= region_size or !(list_start or offset > previous)) {
            return @intCast(i);
        }
        out[i] = @floatFromInt(offset);
        previous = offset;
    }
    // Both lists are sorted: one merge pass finds an offset present in both.
    var n: usize = 0;
    var z: usize = normal_count;
    while (n < normal_count and z < count) {
        if (out[n] == out[z]) return -1 - @as(i32, @intCast(n));
        if (out[n] < out[z]) n += 1 else z += 1;
    }
    return @intCast(count);
}

/// Decodes `count` big-endian u64 offsets from `wire` (from byte `at`) into `out`, in any
/// order (QEMU's packets): each must be a multiple of `page_size` with the whole page
/// inside a block of `block_size` bytes. Returns `count`, or the index of the first that is not
/// (0 when `page_size` or `block_size` is not a whole number: sys.whole).
export fn zc_block_offsets_decode(wire: [*]const u8, at: u32, count: u32, page_size_number: sys.Number, block_size_number: sys.Number, out: [*]f64) i32 {
    const page_size = sys.whole(page_size_number) orelse 0;
    const block_size = sys.whole(block_size_number) orelse 0;
    if (page_size == 0) return 0;
    return @intCast(decodeBlockOffsets(wire + at, count, page_size, block_size, out));
}

/// zc_block_offsets_decode's rule and loop (also zc_recv_wire_pages'): `count`, or the index
/// of the first offset that is not a whole page inside the block. `page_size` > 0.
pub fn decodeBlockOffsets(wire: [*]const u8, count: u32, page_size: u64, block_size: u64, out: [*]f64) u32 {
    for (0..count) |i| {
        const offset = wireOffset(wire, i);
        if (offset % page_size != 0 or offset >= block_size or block_size - offset < page_size) return @intCast(i);
        out[i] = @floatFromInt(offset);
    }
    return count;
}

/// Writes `count` offsets as big-endian u64 to `wire`, from byte `at`.
export fn zc_offsets_encode(offsets: [*]const f64, count: u32, wire: [*]u8, at: u32) i32 {
    for (0..count) |i| std.mem.writeInt(u64, wire[at + i * 8 ..][0..8], @intFromFloat(offsets[i]), .big);
    return 0;
}

/// The offsets of pages [first, first + count) of a round, to `out`: `pages[first + i] *
/// page_size` when `use_pages` is 1, else the region's pages in order.
export fn zc_round_offsets(pages: [*]const u32, use_pages: u32, first: u32, count: u32, page_size_number: sys.Number, out: [*]f64) i32 {
    const page_size = sys.whole(page_size_number) orelse return sys.invalid_number;
    for (0..count) |i| {
        const page: u64 = if (use_pages != 0) pages[first + i] else first + i;
        out[i] = @floatFromInt(page * page_size);
    }
    return 0;
}

/// Length of the page at `offset` in a region of `region_size` bytes (the last may be short).
pub inline fn pageLength(offset: u64, page_size: u64, region_size: u64) u64 {
    return @min(page_size, region_size - offset);
}

/// The memory of the pages at `offsets` (in the region at `base`) as (address, length)
/// pairs in `ranges`, pages that follow each other merged into one range. Returns the
/// number of ranges; `bytes[0]` gets the pages' total length.
export fn zc_page_ranges(base_number: sys.Number, region_size_number: sys.Number, page_size_number: sys.Number, offsets: [*]const f64, count: u32, ranges: [*]f64, bytes: *f64) i32 {
    const base = sys.whole(base_number) orelse return sys.invalid_number;
    const region_size = sys.whole(region_size_number) orelse return sys.invalid_number;
    const page_size = sys.whole(page_size_number) orelse return sys.invalid_number;
    var total: u64 = 0;
    var n: usize = 0;
    var start: u64 = 0;
    var length: u64 = 0;
    for (0..count) |i| {
        const offset: u64 = @intFromFloat(offsets[i]);
        const here = pageLength(offset, page_size, region_size);
        total += here;
        if (length > 0 and start + length == offset) {
            length += here;
            continue;
        }
        if (length > 0) {
            ranges[2 * n] = @floatFromInt(base + start);
            ranges[2 * n + 1] = @floatFromInt(length);
            n += 1;
        }
        start = offset;
        length = here;
    }
    if (length > 0) {
        ranges[2 * n] = @floatFromInt(base + start);
        ranges[2 * n + 1] = @floatFromInt(length);
        n += 1;
    }
    bytes.* = @floatFromInt(total);
    return @intCast(n);
}

/// Whether every byte is zero. A page of data nearly always shows it in its first, middle or
/// last word, so those are looked at first (a source's pages are mostly data: scanning each
/// whole page cost more than the kernel's copy of it); then 256-byte blocks, stopping at the
/// first one that is not zero.
fn isZero(bytes: []const u8) bool {
    const n = bytes.len;
    if (n >= 8) {
        const word = struct {
            fn at(b: []const u8, i: usize) u64 {
                return @bitCast(b[i..][0..8].*);
            }
        }.at;
        // One at a time: a page of data is almost always told by its first word, and each
        // further word is another cache line to wait for.
        if (word(bytes, 0) != 0 or word(bytes, n - 8) != 0 or word(bytes, (n / 2) & ~@as(usize, 7)) != 0) return false;
    }
    const V = @Vector(64, u8);
    var i: usize = 0;
    while (i + 256 <= n) : (i += 256) {
        const block = bytes[i..][0..256];
        const acc = @as(V, block[0..64].*) | @as(V, block[64..128].*) | @as(V, block[128..192].*) | @as(V, block[192..256].*);
        if (@reduce(.Or, acc) != 0) return false;
    }
    for (bytes[i..]) |b| if (b != 0) return false;
    return true;
}

fn pageBytes(base: usize, offset: f64, page_size: u64, region_size: u64) []u8 {
    const at: u64 = @intFromFloat(offset);
    const start: [*]u8 = @ptrFromInt(base + at);
    return start[0..@intCast(pageLength(at, page_size, region_size))];
}

/// How many pages ahead zc_split_zero_pages prefetches.
const scan_ahead = 8;

/// Splits the pages at `offsets` into those holding data (their offsets to `normal`) and
/// the all-zero ones (to `zero`), both in order. Returns the number of zero pages.
/// `sparse_fd >= 0`: the memory maps that file from offset 0 (a sparse file,
/// RegionDescriptor.sparseFd): a page in one of its holes is a zero page without being read
/// (a read through a tmpfs mapping would allocate it, or raise SIGBUS on a full file system).
export fn zc_split_zero_pages(base_number: sys.Number, region_size_number: sys.Number, page_size_number: sys.Number, offsets: [*]const f64, count: u32, normal: [*]f64, zero: [*]f64, sparse_fd: i32) i32 {
    const base = sys.whole(base_number) orelse return sys.invalid_number;
    const region_size = sys.whole(region_size_number) orelse return sys.invalid_number;
    const page_size = sys.whole(page_size_number) orelse return sys.invalid_number;
    return @intCast(splitZero(base, region_size, page_size, offsets, count, normal, zero, sparse_fd));
}

/// zc_split_zero_pages' loop (also zc_send_run's): the number of zero pages.
pub fn splitZero(base: u64, region_size: u64, page_size: u64, offsets: [*]const f64, count: u32, normal: [*]f64, zero: [*]f64, sparse_fd: i32) u32 {
    var n: usize = 0;
    var z: usize = 0;
    var extents = Extents{ .fd = sparse_fd };
    for (0..count) |i| {
        // The first line of a page some pages on: the hardware does not prefetch across
        // pages, so without it every page's first word is a wait on memory.
        if (i + scan_ahead < count) {
            const ahead: [*]const u8 = @ptrFromInt(base + @as(u64, @intFromFloat(offsets[i + scan_ahead])));
            @prefetch(ahead, .{});
        }
        const bytes = pageBytes(base, offsets[i], page_size, region_size);
        if (extents.isHole(@intFromPtr(bytes.ptr) - base, bytes.len) or isZero(bytes)) {
            zero[z] = offsets[i];
            z += 1;
        } else {
            normal[n] = offsets[i];
            n += 1;
        }
    }
    return @intCast(z);
}

/// Where a sparse file holds data and where holes, found with lseek(SEEK_DATA/SEEK_HOLE)
/// and kept for the pages that follow: a run of pages costs an lseek or two, not one each.
pub const Extents = struct {
    /// The file; -1: no file, or lseek failed (every page then counts as data).
    fd: i32,
    data_start: u64 = 0,
    data_end: u64 = 0,
    hole_start: u64 = 0,
    hole_end: u64 = 0,

    /// Whether [at, at + length) of the file lies in one of its holes.
    pub fn isHole(self: *Extents, at: u64, length: u64) bool {
        if (self.fd < 0) return false;
        if (at >= self.data_start and at < self.data_end) return false;
        if (at >= self.hole_start and at + length <= self.hole_end) return true;
        const data = sys.result(sys.linux.lseek(self.fd, @intCast(at), SEEK_DATA));
        if (data == -@as(isize, @intFromEnum(sys.linux.E.NXIO))) { // holes to the end of the file
            self.hole_start = at;
            self.hole_end = std.math.maxInt(u64);
            return true;
        }
        if (data < 0) {
            self.fd = -1;
            return false;
        }
        const data_at: u64 = @intCast(data);
        if (data_at >= at + length) {
            self.hole_start = at;
            self.hole_end = data_at;
            return true;
        }
        const hole = sys.result(sys.linux.lseek(self.fd, @intCast(data_at), SEEK_HOLE));
        self.data_start = data_at;
        self.data_end = if (hole < 0) std.math.maxInt(u64) else @intCast(hole);
        return false;
    }
};

/// Makes the pages at `offsets` read as zeros. Pages that already are zero are left
/// untouched, so an untouched page of anonymous memory is never faulted in. `sparse_fd >= 0`
/// (the file the memory maps from offset 0; Region.createFile's `sparse`): a page in one of
/// its holes reads as zeros already and is not touched at all, so the file stays sparse
/// (QEMU's destination skips a zero page it never received the same way). `populate != 0`
/// (a file in memory, whose space may not be reserved): the pages written are first faulted
/// in for writing, a run of adjacent pages per madvise, so a file system that cannot give
/// them fails the call with -errno where touching them would have raised SIGBUS.
export fn zc_zero_pages(base_number: sys.Number, region_size_number: sys.Number, page_size_number: sys.Number, offsets: [*]const f64, count: u32, populate: u32, sparse_fd: i32) i32 {
    const base = sys.whole(base_number) orelse return sys.invalid_number;
    const region_size = sys.whole(region_size_number) orelse return sys.invalid_number;
    const page_size = sys.whole(page_size_number) orelse return sys.invalid_number;
    return zeroPages(base, region_size, page_size, offsets, count, populate, sparse_fd);
}

/// zc_zero_pages' work (also zc_recv_wire_run's), on offsets checked already: a run of
/// adjacent pages outside the file's holes at a time, populated in one call.
pub fn zeroPages(base: u64, region_size: u64, page_size: u64, offsets: [*]const f64, count: u32, populate: u32, sparse_fd: i32) i32 {
    var extents = Extents{ .fd = sparse_fd };
    var i: usize = 0;
    while (i < count) {
        const first = pageBytes(base, offsets[i], page_size, region_size);
        if (extents.isHole(@intFromPtr(first.ptr) - base, first.len)) {
            i += 1;
            continue;
        }
        const start = @intFromPtr(first.ptr);
        var end = start + first.len;
        var next_run = i + 1;
        while (next_run < count) : (next_run += 1) {
            const next = pageBytes(base, offsets[next_run], page_size, region_size);
            if (@intFromPtr(next.ptr) != end or extents.isHole(end - base, next.len)) break;
            end += next.len;
        }
        if (populate != 0) {
            const rc = populateWrite(start, end);
            if (rc < 0) return rc;
        }
        for (i..next_run) |k| {
            const bytes = pageBytes(base, offsets[k], page_size, region_size);
            if (!isZero(bytes)) @memset(bytes, 0);
        }
        i = next_run;
    }
    return 0;
}

/// MADV_POPULATE_WRITE over [start, end). A kernel without it (EINVAL, < 5.14) leaves the
/// pages to be faulted in by the touch: Region.createFile reserves a sparse file's space
/// on such a kernel.
fn populateWrite(start: u64, end: u64) i32 {
    if (end == start) return 0;
    const rc = sys.result32(sys.linux.madvise(@ptrFromInt(start), end - start, MADV_POPULATE_WRITE));
    return if (rc == sys.invalid_number) 0 else rc;
}
