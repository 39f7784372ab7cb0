// mimalloc keeps a long-running control plane's memory close to what it holds: glibc's
// per-thread arenas keep freed memory of busy threads resident (compare bench/cluster.sh's
// settled RSS with MALLOC_ARENA_MAX=1 and without it on a glibc build).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(yun::main_from_args(std::env::args_os().collect()));
}
