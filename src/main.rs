//! The `rangedb` binary: server and CLI in one.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    rangedb::cli::main()
}

#[cfg(madsim)]
fn main() {
    eprintln!("the rangedb binary is not built for simulation; run `make sim` for the simulator");
    std::process::exit(2);
}
