//! Memory regions: anonymous and file mappings, pre-faulting, the per-page work that must
//! run at memory speed (zero-page detection, zero-filling), and the keyed region checksum.
//! Addresses and 64-bit results go through caller buffers so no call returns a BigInt.
const std = @import("std");
const sys = @import("sys.zig");
const pages = @import("pages.zig");
const linux = sys.linux;

pub const MADV_POPULATE_READ = 22;
pub const MADV_POPULATE_WRITE = 23;

/// Anonymous private read-write mapping; `huge_pages != 0` asks for transparent huge pages.
/// Writes the address to `out[0]`.
export fn zc_map_anonymous(length_number: sys.Number, huge_pages: u32, out: *usize) i32 {
    const length = sys.whole(length_number) orelse return sys.invalid_number;
    const rc = linux.mmap(null, length, .{ .READ = true, .WRITE = true }, .{ .TYPE = .PRIVATE, .ANONYMOUS = true, .NORESERVE = true }, -1, 0);
    const signed = sys.result(rc);
    if (signed < 0) return @intCast(signed);
    if (huge_pages != 0) _ = linux.madvise(@ptrFromInt(rc), length, linux.MADV.HUGEPAGE);
    out.* = rc;
    return 0;
}

/// Shared mapping of an open file (writes land in the file). Writes the address to `out[0]`.
export fn zc_map_file(fd: i32, length_number: sys.Number, writable: u32, out: *usize) i32 {
    const length = sys.whole(length_number) orelse return sys.invalid_number;
    const rc = linux.mmap(null, length, .{ .READ = true, .WRITE = writable != 0 }, .{ .TYPE = .SHARED }, fd, 0);
    const signed = sys.result(rc);
    if (signed < 0) return @intCast(signed);
    out.* = rc;
    return 0;
}

export fn zc_unmap(address_number: sys.Number, length_number: sys.Number) i32 {
    const address = sys.whole(address_number) orelse return sys.invalid_number;
    const length = sys.whole(length_number) orelse return sys.invalid_number;
    return sys.result32(linux.munmap(@ptrFromInt(address), length));
}

/// Faults every page in now (for writing or reading), so first-touch costs are not paid
/// during a transfer.
export fn zc_prefault(address_number: sys.Number, length_number: sys.Number, for_write: u32) i32 {
    const address = sys.whole(address_number) orelse return sys.invalid_number;
    const length = sys.whole(length_number) orelse return sys.invalid_number;
    const advice: u32 = if (for_write != 0) MADV_POPULATE_WRITE else MADV_POPULATE_READ;
    return sys.result32(linux.madvise(@ptrFromInt(address), length, advice));
}

/// mode 0: read-only; 1: read-write, created fresh (truncated), 0600; 2: read-write existing.
export fn zc_open_file(path: [*:0]const u8, mode: u32) i32 {
    const flags: linux.O = switch (mode) {
        0 => .{ .ACCMODE = .RDONLY, .CLOEXEC = true },
        1 => .{ .ACCMODE = .RDWR, .CREAT = true, .TRUNC = true, .CLOEXEC = true },
        2 => .{ .ACCMODE = .RDWR, .CLOEXEC = true },
        else => return sys.errnoOf(.INVAL),
    };
    return sys.result32(linux.openat(linux.AT.FDCWD, path, flags, 0o600));
}

/// Writes the file's size to `out[0]`.
export fn zc_file_size(fd: i32, out: *u64) i32 {
    const rc = linux.lseek(fd, 0, linux.SEEK.END);
    const signed: i64 = @bitCast(rc);
    if (signed < 0) return @intCast(signed);
    out.* = rc;
    return 0;
}

/// Writes where the file's first hole starts (lseek SEEK_HOLE from 0; its size when it has
/// none) to `out[0]`.
export fn zc_first_hole(fd: i32, out: *u64) i32 {
    const rc = linux.lseek(fd, 0, SEEK_HOLE);
    const signed: i64 = @bitCast(rc);
    if (signed < 0) return @intCast(signed);
    out.* = rc;
    return 0;
}

/// Writes what statfs says of the file system holding `fd` to `out[0..4]`: its type
/// (`f_type`, e.g. TMPFS_MAGIC 0x01021994), block size, blocks free to us, blocks in all
/// (0: no limit, as a tmpfs mounted with size=0).
export fn zc_fs_stat(fd: i32, out: *[4]u64) i32 {
    // struct statfs on x86-64: 120 bytes, f_type, f_bsize, f_blocks, f_bfree, f_bavail
    // first. Not wrapped by this std version.
    var buf: [15]u64 = undefined;
    const rc = sys.result32(linux.syscall2(.fstatfs, @as(usize, @bitCast(@as(isize, fd))), @intFromPtr(&buf)));
    if (rc < 0) return rc;
    out.* = .{ buf[0], buf[1], buf[4], buf[2] };
    return 0;
}

/// Sets the file's size to `length`; `reserve != 0` also allocates its blocks (so a full
/// disk fails now, not as SIGBUS later).
export fn zc_allocate_file(fd: i32, length_number: sys.Number, reserve: u32) i32 {
    const length = sys.whole(length_number) orelse return sys.invalid_number;
    if (length == 0 or reserve == 0) return sys.result32(linux.ftruncate(fd, @intCast(length)));
    return sys.result32(linux.fallocate(fd, 0, 0, @intCast(length)));
}

export fn zc_sync_file(fd: i32) i32 {
    return sys.result32(linux.fsync(fd));
}

/// Keyed MAC of [address, address + length) under the 32-byte `key`, over `domain` (u32 LE)
/// ‖ 0 (u32) ‖ `index` (u64 LE) ‖ the bytes, 32 bytes written to `out`: the region checksum
/// (src/multifd/checksum.ts), one per 64 MiB block (domain 0, index = block), then one over
/// those tags (domain 1, index = region size). `algorithm` 0: BLAKE3 in keyed mode; 1:
/// AEGIS-128L-MAC (256-bit tag) under the key's first 16 bytes. Both from std.crypto.
/// `sparse_fd >= 0`: the bytes are a sparse file's (Region.createFile's `sparse`) mapped
/// there, `address` at `file_offset_number`: its holes are hashed as the zeros they read as,
/// never touched (reading a hole of a tmpfs mapping would allocate its page).
export fn zc_region_mac(address_number: sys.Number, length_number: sys.Number, key: [*]const u8, domain: u32, index_number: sys.Number, out: [*]u8, algorithm: u32, sparse_fd: i32, file_offset_number: sys.Number) i32 {
    const address = sys.whole(address_number) orelse return sys.invalid_number;
    const length = sys.whole(length_number) orelse return sys.invalid_number;
    const index = sys.whole(index_number) orelse return sys.invalid_number;
    const file_offset = sys.whole(file_offset_number) orelse return sys.invalid_number;
    var prefix: [16]u8 = @splat(0);
    std.mem.writeInt(u32, prefix[0..4], domain, .little);
    std.mem.writeInt(u64, prefix[8..16], index, .little);
    switch (algorithm) {
        0 => {
            const Blake3 = std.crypto.hash.Blake3;
            var hasher = Blake3.init(.{ .key = key[0..Blake3.key_length].* });
            hasher.update(&prefix);
            updateSparse(&hasher, address, length, sparse_fd, file_offset);
            hasher.final(out[0..32]);
        },
        1 => {
            const Mac = std.crypto.auth.aegis.Aegis128LMac;
            var mac = Mac.init(key[0..Mac.key_length]);
            mac.update(&prefix);
            updateSparse(&mac, address, length, sparse_fd, file_offset);
            mac.final(out[0..Mac.mac_length]);
        },
        else => return -@as(i32, @intFromEnum(linux.E.INVAL)),
    }
    return 0;
}

pub const SEEK_DATA = 3;
pub const SEEK_HOLE = 4;
const zeros: [64 * 1024]u8 = @splat(0);

/// Feeds [address, address + length) to `hasher`; with `sparse_fd >= 0`, the file's holes
/// in it (page by page, runs merged) as zeros from a constant buffer.
fn updateSparse(hasher: anytype, address: u64, length: u64, sparse_fd: i32, file_offset: u64) void {
    const bytes: [*]const u8 = @ptrFromInt(if (length > 0) address else @intFromPtr(&zeros));
    if (sparse_fd < 0) return hasher.update(bytes[0..length]);
    const page = std.heap.page_size_min;
    var extents = pages.Extents{ .fd = sparse_fd };
    var at: u64 = 0;
    while (at < length) {
        const hole = extents.isHole(file_offset + at, @min(page, length - at));
        var end = at + @min(page, length - at);
        while (end < length and extents.isHole(file_offset + end, @min(page, length - end)) == hole) {
            end += @min(page, length - end);
        }
        if (hole) {
            while (at < end) {
                const n = @min(zeros.len, end - at);
                hasher.update(zeros[0..n]);
                at += n;
            }
        } else {
            hasher.update(bytes[at..end]);
            at = end;
        }
    }
}

/// 1 when this build's AES (std.crypto) runs on the CPU's AES instructions (the x86-64-v3
/// build), 0 when it is software: AEGIS-128L-MAC is then ~40× slower than BLAKE3.
export fn zc_hardware_aes() i32 {
    return @intFromBool(std.crypto.core.aes.has_hardware_support);
}

/// The address of a buffer's first byte, as a double (exact: user addresses are below
/// 2^47). It lets the Deno binding take an address with one fast FFI call instead of
/// Deno.UnsafePointer.of + value (two ops and a BigInt), on every write of caller buffers.
export fn zc_address_of(buffer: [*]const u8) f64 {
    return @floatFromInt(@intFromPtr(buffer));
}
