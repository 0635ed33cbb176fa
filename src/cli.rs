//! Command line: serve | sandbox | check-config | admin … (filled in by the spine).
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
