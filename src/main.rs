//! The `gatehouse` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    gatehouse::main()
}
