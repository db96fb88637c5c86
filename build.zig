//! Builds the syscall library into zig-out/lib/libzerocopy_multifd.so (linux x86_64, no libc).
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{ .default_target = .{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .none } });
    // The library is a thin syscall layer: release builds by default, `-Doptimize=debug` to debug it.
    const optimize = b.option(std.builtin.Optimize, "optimize", "Optimization mode (default fast)") orelse .fast;

    const lib = b.addLibrary(.{
        .name = "zerocopy_multifd",
        .linkage = .dynamic,
        .root_module = b.createModule(.{
            .root_source_file = b.path("zig/root.zig"),
            .target = target,
            .optimize = optimize,
            .link_libc = false,
            .strip = true,
        }),
    });
    b.installArtifact(lib);
}
