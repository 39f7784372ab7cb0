//! `yun-vm-supervisor DIR`: the VM supervisor on its own, for yun-vmm's tests and benchmarks
//! (yun runs the same code as `yun vm supervise DIR`).

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: yun-vm-supervisor DIR");
        std::process::exit(2);
    };
    std::process::exit(yun_vmm::supervise(std::path::Path::new(&dir)));
}
