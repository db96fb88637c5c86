//! libzerocopy_multifd: thin syscall wrappers for the TypeScript layers above, and the loops
//! that must run at memory speed (zero pages, the region checksum, sealing and opening
//! packets). No policy: each export does one operation and returns its result, -errno on failure.
comptime {
    _ = @import("socket.zig");
    _ = @import("transfer.zig");
    _ = @import("errqueue.zig");
    _ = @import("poll.zig");
    _ = @import("memory.zig");
    _ = @import("pages.zig");
    _ = @import("aead.zig");
}
