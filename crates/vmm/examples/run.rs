//! `run [--cpus N] [--memory MiB] [--data-dir DIR] [--kernel F] [--initrd F] [--accel A] -- CMD...`
//! Stand-in for `yun vm run` until the CLI is wired: exits with the guest command's status.

use std::path::PathBuf;

fn main() {
    let mut spec = yun_vmm::RunSpec::default();
    let mut data_dir = PathBuf::from("/var/lib/yun");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{a}: needs a value")))
        };
        match a.as_str() {
            "--cpus" => {
                spec.cpus = val()
                    .parse()
                    .unwrap_or_else(|_| fail("--cpus: not a number"))
            }
            "--memory" => {
                spec.memory_mib = val()
                    .parse()
                    .unwrap_or_else(|_| fail("--memory: not a number"))
            }
            "--data-dir" => data_dir = val().into(),
            "--kernel" => spec.kernel = Some(val().into()),
            "--initrd" => spec.initrd = Some(val().into()),
            "--accel" => spec.accel = Some(val()),
            "--append" => spec.extra_cmdline = val(),
            "--" => {
                spec.cmd = args.collect();
                break;
            }
            _ => fail(&format!("{a}: unknown option")),
        }
    }
    let mut out = std::io::stdout();
    match yun_vmm::run(&data_dir, &spec, &mut out) {
        Ok(status) => std::process::exit(status),
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("run: {msg}");
    std::process::exit(125)
}
