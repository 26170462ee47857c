//! Why a call to the backend gave no answer: what the handlers answer 503 or 500 for, and what
//! telemetry counts.

use std::fmt;
use std::time::Duration;

/// Why a call to the backend gave no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Redis was not reached yet since the process started.
    NotConnected,
    /// No answer within the Redis timeout.
    TimedOut(Duration),
    /// The gate failed; [`coupon_gate::Error::is_unavailable`] tells whether it is of the
    /// moment.
    Gate(coupon_gate::Error),
}

impl Failure {
    /// Whether the client should be told to try again (503), rather than that the server
    /// failed (500).
    pub(crate) fn is_unavailable(&self) -> bool {
        match self {
            Self::NotConnected | Self::TimedOut(_) => true,
            Self::Gate(err) => err.is_unavailable(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => f.write_str("redis was not reached yet"),
            Self::TimedOut(limit) => write!(f, "no answer from redis within {limit:?}"),
            Self::Gate(err) => err.fmt(f),
        }
    }
}
