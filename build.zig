//! Builds the syscall library into zig-out/lib/libzerocopy_multifd.so (linux x86_64, no libc),
//! and the native reference programs of the benchmarks (zig/bench/) into zig-out/bin/.
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

    // Benchmark references (bench/): zc-ref-sink and zc-ref-send, static, no libc. They link
    // the library's own source (module `zc`), so they make exactly the module's syscalls.
    for ([_][2][]const u8{
        .{ "zc-ref-sink", "zig/bench/ref_sink.zig" },
        .{ "zc-ref-send", "zig/bench/ref_send.zig" },
    }) |program| {
        const library_source = b.createModule(.{
            .root_source_file = b.path("zig/root.zig"),
            .target = target,
            .optimize = optimize,
            .link_libc = false,
        });
        const exe = b.addExecutable(.{
            .name = program[0],
            .root_module = b.createModule(.{
                .root_source_file = b.path(program[1]),
                .target = target,
                .optimize = optimize,
                .link_libc = false,
                .strip = true,
                .imports = &.{.{ .name = "zc", .module = library_source }},
            }),
        });
        b.installArtifact(exe);
    }
}
