fn main() -> std::process::ExitCode {
    water_pt::cli::main()
}
