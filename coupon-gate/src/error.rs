//! Failures of the backend: Redis could not answer, refused a command, or answered something
//! unexpected; or the task that batches a campaign's applications is gone.
//!
//! Rejections (duplicate, sold out, ...) are not errors; see [`crate::Outcome`].

use std::fmt;

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// A failure of the gate's backend. Only [`Error::Unavailable`] is worth retrying; the others
/// are faults that a retry meets again.
///
/// When an apply fails with an error, the caller cannot know whether the script ran: a
/// timeout may hide a success. Such an application must be reported as "try again" (a retry
/// answers [`crate::Outcome::Duplicate`] if it did run), never as a rejection, and must not be
/// compensated with [`crate::Gate::release`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not answer now: unreachable, the connection broke or timed out, or it is
    /// loading, failing over or busy. Retrying later may succeed.
    Unavailable(RedisError),
    /// Redis answered the command with an error: a script error, a key of the wrong type, a
    /// missing permission. A fault of the deployment or of the gate, not of the moment.
    Refused(RedisError),
    /// Redis answered in a shape the gate does not understand: keys written by something else,
    /// or a script of another version.
    Protocol(String),
    /// The task that batches a campaign's applications ended before answering (its runtime is
    /// shutting down).
    BatchEnded,
    /// Fewer replicas than required (see [`crate::Gate::with_replica_acks`]) confirmed a write
    /// in time. The write is on the master and may yet be lost if it fails over now, so what it
    /// decided must not be announced; retrying later may succeed.
    NotReplicated {
        /// Replicas that confirmed.
        confirmed: u64,
        /// Replicas required.
        required: u32,
    },
}

impl Error {
    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }

    /// Whether the failure is of the moment (Redis unreachable, slow or failing over), so that
    /// the caller should answer "try again", rather than a fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::NotReplicated { .. })
    }
}

/// Whether `err` says Redis could not answer now, rather than that it refused the command.
fn unavailable(err: &RedisError) -> bool {
    match err.kind() {
        ErrorKind::Io
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel => true,
        ErrorKind::Server(kind) => {
            matches!(
                kind,
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            ) || err.code() == Some("BUSY")
        }
        _ => false,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(err) => write!(f, "redis unavailable: {err}"),
            Self::Refused(err) => write!(f, "redis refused a command: {err}"),
            Self::Protocol(what) => write!(f, "unexpected reply from redis: {what}"),
            Self::BatchEnded => f.write_str("the campaign's batch task ended before answering"),
            Self::NotReplicated {
                confirmed,
                required,
            } => write!(
                f,
                "{confirmed} of {required} required redis replicas confirmed the write in time"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable(err) | Self::Refused(err) => Some(err),
            Self::Protocol(_) | Self::BatchEnded | Self::NotReplicated { .. } => None,
        }
    }
}

impl From<RedisError> for Error {
    fn from(err: RedisError) -> Self {
        if unavailable(&err) {
            Self::Unavailable(err)
        } else {
            Self::Refused(err)
        }
    }
}

/// A count or seq from Redis, which the gate keeps within 32 bits.
pub(crate) fn to_seq<T: TryInto<u32> + Copy + std::fmt::Display>(n: T) -> Result<u32, Error> {
    n.try_into()
        .map_err(|_| Error::protocol(format!("{n} is not a 32-bit count")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unavailable_and_refusals_are_not() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(Error::from(io).is_unavailable());
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(Error::from(timeout).is_unavailable());
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(Error::from(loading).is_unavailable());
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "script error",
        ));
        assert!(matches!(Error::from(script), Error::Refused(_)));
        assert!(!Error::protocol("odd").is_unavailable());
        assert!(!Error::BatchEnded.is_unavailable());
        let lagging = Error::NotReplicated {
            confirmed: 0,
            required: 1,
        };
        assert!(lagging.is_unavailable());
    }
}
