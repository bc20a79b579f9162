//! `werk-powerloss BACKING MOUNTPOINT [--seed N] [--strict-dirs]`: mounts the power-loss
//! filesystem (see the library documentation) until SIGINT or SIGTERM, then unmounts it.
//! Control it by writing to `MOUNTPOINT/.powerloss`, e.g. `echo 'cut any' > MNT/.powerloss`.

use std::path::PathBuf;
use std::process::ExitCode;

use werk_powerloss::{mount, DirModel, Options};

fn main() -> ExitCode {
    let mut paths = Vec::new();
    let mut opts = Options {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        dir_model: DirModel::Journal,
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--strict-dirs") => opts.dir_model = DirModel::Strict,
            Some("--seed") => match args.next().and_then(|s| s.to_str()?.parse().ok()) {
                Some(s) => opts.seed = s,
                None => return usage(),
            },
            Some(s) if s.starts_with('-') => return usage(),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let [backing, mountpoint] = paths.as_slice() else {
        return usage();
    };
    // Block the stop signals before the session thread starts, so only sigwait sees them.
    // SAFETY: plain signal-mask calls on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let m = match mount(backing, mountpoint, opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("werk-powerloss: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "werk-powerloss: mounted {} over {} (seed {}, {:?}); control file {}",
        mountpoint.display(),
        backing.display(),
        opts.seed,
        opts.dir_model,
        m.control().display()
    );
    let mut sig = 0;
    // SAFETY: waits for one of the blocked signals.
    unsafe { libc::sigwait(&set, &mut sig) };
    drop(m);
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: werk-powerloss BACKING MOUNTPOINT [--seed N] [--strict-dirs]");
    ExitCode::from(2)
}
