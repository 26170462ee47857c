//! Failures of the backend: Redis could not be reached, or answered something unexpected.
//!
//! Rejections (duplicate, sold out, ...) are not errors; see [`crate::Outcome`].

use std::fmt;

/// A Redis or protocol failure.
///
/// When an apply fails with an error, the caller cannot know whether the script ran: a
/// timeout may hide a success. Such an application must be reported as "try again" (a retry
/// answers [`crate::Outcome::Duplicate`] if it did run), never as a rejection, and must not be
/// compensated with [`crate::Gate::release`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached, refused the command, or the connection broke.
    Redis(redis::RedisError),
    /// Redis answered in a shape the gate does not understand: keys written by something else,
    /// or a script of another version.
    Protocol(String),
}

impl Error {
    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(err) => write!(f, "redis: {err}"),
            Self::Protocol(what) => write!(f, "unexpected reply from redis: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Redis(err) => Some(err),
            Self::Protocol(_) => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        Self::Redis(err)
    }
}
