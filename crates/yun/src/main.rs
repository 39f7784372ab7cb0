fn main() {
    std::process::exit(yun::main_from_args(std::env::args_os().collect()));
}
