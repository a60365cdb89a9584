//! Starting data-parallel tests under `mpirun`: the tests that need it return early (and say
//! so) when the binary was built without `--features mpi`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this build has MPI support; prints why a test is skipped when not.
pub fn mpi_enabled(test: &str) -> bool {
    if cfg!(feature = "mpi") {
        return true;
    }
    eprintln!("{test}: skipped (built without `--features mpi`)");
    false
}

/// `mpirun -np N` for this machine's tests: as root in a container it needs
/// `--allow-run-as-root`, and more ranks than cores need `--oversubscribe`; `env` is exported to
/// every rank.
pub fn mpirun(ranks: usize, env: &[(&str, &str)], program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string(), "--allow-run-as-root", "--oversubscribe"]);
    for (k, v) in env {
        cmd.env(k, v);
        cmd.args(["-x", k]);
    }
    cmd.arg(program).args(args).current_dir(super::root());
    cmd
}

/// Runs `cmd` to its end and collects its output. The wait has no time limit that a slow
/// machine could hit: only after `far` (minutes beyond any run of these tests) is the job
/// killed, so that a hang fails the test instead of blocking CI forever.
pub fn run_with_far_deadline(mut cmd: Command, far: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start mpirun");
    // drain both pipes while waiting, so that a chatty run never blocks on a full pipe
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mpirun") {
            break status;
        }
        if start.elapsed() > far {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!("still running after {far:?}: a hang; stderr:\n{}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// A deadline no run of these tests comes near: 30 minutes.
pub const FAR: Duration = Duration::from_secs(30 * 60);
