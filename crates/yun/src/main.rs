// mimalloc keeps a long-running control plane's memory close to what it holds: with glibc's
// per-thread arenas, `yun up` watching 30 000 pods kept a quarter more resident than it used
// (bench/cluster.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(yun::main_from_args(std::env::args_os().collect()));
}
