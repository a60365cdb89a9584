//! What a collective operation or the launcher can fail with.

/// A failed collective operation or launch; each names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The launcher could not start (no MPI support built in, MPI refused to start, ...).
    #[error("launcher: {0}")]
    Launch(String),
    /// A collective operation got arguments it cannot work with.
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Another rank of the group failed (ranks as threads), so this call cannot complete.
    #[error("{op}: rank {rank} failed: {why}")]
    RankFailed {
        /// The operation.
        op: &'static str,
        /// The rank that failed first.
        rank: usize,
        /// Its error.
        why: String,
    },
    /// The process group was shut down before the call.
    #[error("{0}: the process group was already finalized")]
    Finalized(&'static str),
}
