//! Builds the eBPF objects (crate tracer-ebpf, for the bpf target, with the
//! nightly toolchain and bpf-linker) so `cargo build` embeds them in pkttrace.
fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    // The bench's floor build (feature bench-floor): programs that return at once.
    let floor = std::env::var_os("CARGO_FEATURE_BENCH_FLOOR").is_some();
    let package = aya_build::Package {
        name: "tracer-ebpf",
        root_dir: ebpf_dir,
        features: if floor { &["floor"] } else { &[] },
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
