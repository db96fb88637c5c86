//! Builds the syscall library into zig-out/lib/libzerocopy_multifd.so (linux x86_64, no libc),
//! the same library for x86-64-v3 CPUs beside it, and the native reference programs of the
//! benchmarks (zig/bench/) into zig-out/bin/.
const std = @import("std");

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{ .default_target = .{ .cpu_arch = .x86_64, .os_tag = .linux, .abi = .none } });
    // The library is a thin syscall layer: release builds by default, `-Doptimize=debug` to debug it.
    const optimize = b.option(std.builtin.Optimize, "optimize", "Optimization mode (default fast)") orelse .fast;

    // The same library for x86-64-v3 CPUs (AVX2, BMI2, FMA: 2013 on) with AES-NI and PCLMULQDQ:
    // its BLAKE3, the region checksum, runs 1.75x faster there (2.7 against 1.56 GB/s per core
    // here), and the ciphers of encrypted channels use the AES instructions.
    // ffi/library_path.ts loads it when /proc/cpuinfo has every one of those flags.
    const v3 = b.resolveTargetQuery(.{
        .cpu_arch = .x86_64,
        .os_tag = .linux,
        .abi = .none,
        .cpu_model = .{ .explicit = &std.Target.x86.cpu.x86_64_v3 },
        // AES-NI and carry-less multiply: AEGIS-128L and AES-256-GCM (encrypted channels)
        // in hardware instead of table-based software AES, 0.07 GB/s.
        .cpu_features_add = std.Target.x86.featureSet(&.{ .aes, .pclmul }),
    });
    for ([_]struct { []const u8, std.Build.ResolvedTarget }{
        .{ "zerocopy_multifd", target },
        .{ "zerocopy_multifd_x86_64_v3", v3 },
    }) |variant| {
        const lib = b.addLibrary(.{
            .name = variant[0],
            .linkage = .dynamic,
            .root_module = b.createModule(.{
                .root_source_file = b.path("zig/root.zig"),
                .target = variant[1],
                .optimize = optimize,
                .link_libc = false,
                .strip = true,
            }),
        });
        b.installArtifact(lib);
    }

    // Benchmark references (bench/): zc-ref-sink, zc-ref-send and zc-ref-multifd, static, no libc. They link
    // the library's own source (module `zc`), so they make exactly the module's syscalls.
    for ([_][2][]const u8{
        .{ "zc-ref-sink", "zig/bench/ref_sink.zig" },
        .{ "zc-ref-send", "zig/bench/ref_send.zig" },
        .{ "zc-ref-multifd", "zig/bench/ref_multifd.zig" },
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
