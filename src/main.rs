//! The `gatehouse` binary: everything lives in the library; see `cli`.

/// jemalloc rather than glibc malloc: idle keep-alive connections cost a
/// quarter less resident memory and proxied requests fewer instructions
/// (see the note on the dependency in `Cargo.toml`). Only the binary uses
/// it; the library and its tests keep the system allocator.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gatehouse::main()
}
