//! `yunc`: the same runtime as `yun runtime`, under runc's command line.
fn main() {
    std::process::exit(yun::yunc::main(std::env::args_os().collect()));
}
