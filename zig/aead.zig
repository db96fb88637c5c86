//! Authenticated encryption of packets with std.crypto's AEADs (AEGIS-128L, AES-256-GCM),
//! and HKDF-SHA-256 for the key schedule. Loops at memory speed only: which key, which
//! nonces and what makes a message are the caller's (src/multifd/sealed_codec.ts,
//! docs/PROTOCOL.md "Encrypted channels").
const std = @import("std");
const sys = @import("sys.zig");
const Aegis128L = std.crypto.aead.aegis.Aegis128L;
const Aes256Gcm = std.crypto.aead.aes_gcm.Aes256Gcm;
const HkdfSha256 = std.crypto.kdf.hkdf.HkdfSha256;

/// Every supported cipher's tag is 16 bytes.
const TAG_BYTES = 16;
/// Keys are passed as 32 bytes; AEGIS-128L uses the first 16.
const KEY_BYTES = 32;
const EBADMSG = 74;
const EINVAL = 22;

/// Cipher ids (docs/PROTOCOL.md): 1 AEGIS-128L, 2 AES-256-GCM.
const AEGIS_128L = 1;
const AES_256_GCM = 2;

/// One message's plaintext: `length` bytes at `address` (the iovec layout).
const Message = extern struct { address: usize, length: usize };

/// The nonce of message `number`: the number as a little-endian u64, zero-padded.
fn nonceOf(comptime length: usize, number: u64) [length]u8 {
    var nonce: [length]u8 = @splat(0);
    std.mem.writeInt(u64, nonce[0..8], number, .little);
    return nonce;
}

fn bytesAt(address: usize, length: usize) []u8 {
    if (length == 0) return &.{};
    const pointer: [*]u8 = @ptrFromInt(address);
    return pointer[0..length];
}

fn sealOne(comptime Aead: type, key: [Aead.key_length]u8, number: u64, plain: []const u8, out: []u8) void {
    Aead.encrypt(out[0..plain.len], out[plain.len..][0..TAG_BYTES], plain, &.{}, nonceOf(Aead.nonce_length, number), key);
}

fn openOne(comptime Aead: type, key: [Aead.key_length]u8, number: u64, sealed: []const u8, plain: []u8) bool {
    const tag = sealed[plain.len..][0..TAG_BYTES].*;
    Aead.decrypt(plain, sealed[0..plain.len], tag, &.{}, nonceOf(Aead.nonce_length, number), key) catch {
        // A forged message never leaves plaintext behind, not even in a destination page.
        std.crypto.secureZero(u8, plain);
        return false;
    };
    return true;
}

fn sealAll(comptime Aead: type, key_bytes: [*]const u8, first: u64, messages: []const Message, out: usize) i32 {
    const key = key_bytes[0..Aead.key_length].*;
    var at = out;
    for (messages, 0..) |message, i| {
        const plain = bytesAt(message.address, message.length);
        sealOne(Aead, key, first + i, plain, bytesAt(at, message.length + TAG_BYTES));
        at += message.length + TAG_BYTES;
    }
    return @intCast(at - out);
}

fn openAll(comptime Aead: type, key_bytes: [*]const u8, first: u64, sealed: usize, messages: []const Message) i32 {
    const key = key_bytes[0..Aead.key_length].*;
    var at = sealed;
    for (messages, 0..) |message, i| {
        const plain = bytesAt(message.address, message.length);
        if (!openOne(Aead, key, first + i, bytesAt(at, message.length + TAG_BYTES), plain)) return -EBADMSG;
        at += message.length + TAG_BYTES;
    }
    return 0;
}

/// Seals `count` messages under `key` (32 bytes) with the nonces `first_nonce`,
/// `first_nonce + 1`, …: message i's ciphertext, then its 16-byte tag, written back to back
/// from `out`. No associated data. Returns the bytes written, or -EINVAL for an unknown cipher.
export fn zc_seal(cipher: u32, key: [*]const u8, first_nonce_number: sys.Number, messages: [*]const Message, count: u32, out_number: sys.Number) i32 {
    const first_nonce = sys.whole(first_nonce_number) orelse return sys.invalid_number;
    const out: usize = sys.whole(out_number) orelse return sys.invalid_number;
    return switch (cipher) {
        AEGIS_128L => sealAll(Aegis128L, key, first_nonce, messages[0..count], out),
        AES_256_GCM => sealAll(Aes256Gcm, key, first_nonce, messages[0..count], out),
        else => -EINVAL,
    };
}

/// Opens `count` messages laid out at `sealed` as zc_seal writes them, each into its
/// destination `messages[i]` (which may be elsewhere: pages of a region). Returns 0, or
/// -EBADMSG at the first message that fails authentication: that message's destination is
/// zeroed, and the messages after it are left untouched.
export fn zc_open(cipher: u32, key: [*]const u8, first_nonce_number: sys.Number, sealed_number: sys.Number, messages: [*]const Message, count: u32) i32 {
    const first_nonce = sys.whole(first_nonce_number) orelse return sys.invalid_number;
    const sealed: usize = sys.whole(sealed_number) orelse return sys.invalid_number;
    return switch (cipher) {
        AEGIS_128L => openAll(Aegis128L, key, first_nonce, sealed, messages[0..count]),
        AES_256_GCM => openAll(Aes256Gcm, key, first_nonce, sealed, messages[0..count]),
        else => -EINVAL,
    };
}

/// HKDF-SHA-256 (RFC 5869): extract from `ikm` with `salt`, expand with `info` into
/// `out_length` bytes (at most 255 × 32) at `out`.
export fn zc_hkdf_sha256(ikm: [*]const u8, ikm_length: u32, salt: [*]const u8, salt_length: u32, info: [*]const u8, info_length: u32, out: [*]u8, out_length: u32) i32 {
    if (out_length > 255 * HkdfSha256.prk_length) return -EINVAL;
    const prk = HkdfSha256.extract(salt[0..salt_length], ikm[0..ikm_length]);
    HkdfSha256.expand(out[0..out_length], info[0..info_length], prk);
    return 0;
}

comptime {
    std.debug.assert(Aegis128L.tag_length == TAG_BYTES and Aes256Gcm.tag_length == TAG_BYTES);
    std.debug.assert(Aes256Gcm.key_length == KEY_BYTES and Aegis128L.key_length <= KEY_BYTES);
}
