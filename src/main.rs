//! The `rangedb` binary: server and CLI in one.

/// mimalloc instead of glibc malloc: allocation was a fifth of a loaded
/// node's CPU (see Cargo.toml). Not in simulation builds.
#[cfg(not(madsim))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    rangedb::cli::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("the rangedb binary is not built for simulation; run `make sim` for the simulator");
    std::process::exit(2);
}
