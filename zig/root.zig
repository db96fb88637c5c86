//! libzerocopy_multifd: thin syscall wrappers for the TypeScript layers above. No policy:
//! each export does one kernel operation and returns its result, -errno on failure.
comptime {
    _ = @import("socket.zig");
    _ = @import("transfer.zig");
    _ = @import("errqueue.zig");
    _ = @import("poll.zig");
    _ = @import("memory.zig");
    _ = @import("aead.zig");
}
