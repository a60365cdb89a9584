//! Choosing and starting the process group: `--launcher none|mpi` as mmdetection's
//! `tools/train.py` takes it, or the ranks an `mpirun` / `srun` environment announces.

use crate::{set_world, Collective, DistError, Local};
use std::sync::Arc;

/// How the processes of a run are started (mmdetection's `--launcher`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// One process.
    None,
    /// One rank per process of an MPI job (`mpirun -np N`, `srun --mpi=pmix`).
    Mpi,
}

/// The environment variables through which MPI launchers announce the job's size: Open MPI's
/// `mpirun`, then the PMI of MPICH's Hydra and Slurm.
const SIZE_VARS: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The number of ranks the environment announces, with the variable that says so (`None`
/// outside an MPI job).
pub fn detected_world_size() -> Option<(usize, &'static str)> {
    SIZE_VARS.iter().find_map(|&var| std::env::var(var).ok()?.trim().parse::<usize>().ok().map(|n| (n, var)))
}

/// Keeps the process group alive: dropping it shuts MPI down (`MPI_Finalize`) and restores the
/// world of one as the default group. Hold it until the process is about to exit.
pub struct DistGuard {
    group: Arc<dyn Collective>,
    #[cfg(feature = "mpi")]
    mpi: Option<crate::mpi_world::MpiEnv>,
}

impl DistGuard {
    /// The group this launch installed as [`crate::world`].
    pub fn group(&self) -> Arc<dyn Collective> {
        self.group.clone()
    }
}

impl Drop for DistGuard {
    fn drop(&mut self) {
        set_world(None);
        #[cfg(feature = "mpi")]
        drop(self.mpi.take());
    }
}

/// Starts the process group and installs it as [`crate::world`]. `requested` is the command
/// line's `--launcher`; without one, MPI is used when the environment announces more than one
/// rank. Errors (naming the variable) when ranks are announced but `none` was asked for, and
/// when MPI is needed but this build has no MPI support.
pub fn init(requested: Option<Launcher>) -> Result<DistGuard, DistError> {
    let detected = detected_world_size().filter(|&(n, _)| n > 1);
    let launcher = match (requested, detected) {
        (Some(Launcher::None), Some((n, var))) => {
            return Err(DistError::Launch(format!(
                "{var}={n} announces {n} ranks, but --launcher none was given: each process would train alone \
                 into the same work dir; use --launcher mpi (or leave --launcher out)"
            )))
        }
        (Some(l), _) => l,
        (None, Some(_)) => Launcher::Mpi,
        (None, None) => Launcher::None,
    };
    match launcher {
        Launcher::None => Ok(local_guard()),
        Launcher::Mpi => start_mpi(detected),
    }
}

fn local_guard() -> DistGuard {
    let group: Arc<dyn Collective> = Arc::new(Local);
    set_world(Some(group.clone()));
    DistGuard {
        group,
        #[cfg(feature = "mpi")]
        mpi: None,
    }
}

#[cfg(feature = "mpi")]
fn start_mpi(_detected: Option<(usize, &'static str)>) -> Result<DistGuard, DistError> {
    let (env, group) = crate::mpi_world::MpiEnv::start()?;
    let group: Arc<dyn Collective> = Arc::new(group);
    set_world(Some(group.clone()));
    Ok(DistGuard { group, mpi: Some(env) })
}

#[cfg(not(feature = "mpi"))]
fn start_mpi(detected: Option<(usize, &'static str)>) -> Result<DistGuard, DistError> {
    let why = match detected {
        Some((n, var)) => format!("{var}={n} announces an MPI job of {n} ranks"),
        None => "--launcher mpi was given".to_string(),
    };
    Err(DistError::Launch(format!(
        "{why}, but this nextdet was built without MPI support: install Open MPI (tools/install-mpi.sh) and \
         build with `cargo build --release --features mpi`"
    )))
}
