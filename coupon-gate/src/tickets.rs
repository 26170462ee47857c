//! Random bytes for the tickets of a draw's pre-queue, read from the operating system in bulk.
//!
//! Every admit call carries 7 random bytes per user (see `admit.lua`), used only when the user
//! joins a pre-queue. One `getrandom` call per admit call would cost a system call on every
//! application, race campaigns included, so the bytes come from a pool that one call fills with
//! [`POOL_BYTES`] at a time; each byte is handed out once.

use std::sync::Mutex;

use crate::Error;

/// Bytes read from the operating system at a time: tickets for about 9,000 users.
const POOL_BYTES: usize = 64 * 1024;

/// A pool of random bytes from the operating system.
pub(crate) struct Tickets {
    /// The bytes, and how many of them were handed out.
    pool: Mutex<(Vec<u8>, usize)>,
}

impl Tickets {
    pub(crate) fn new() -> Self {
        Self {
            pool: Mutex::new((Vec::new(), 0)),
        }
    }

    /// `len` random bytes, none handed out before.
    pub(crate) fn take(&self, len: usize) -> Result<Vec<u8>, Error> {
        let mut taken = vec![0u8; len];
        if len > POOL_BYTES {
            fill(&mut taken)?;
            return Ok(taken);
        }
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (bytes, used) = &mut *pool;
        if bytes.len() - *used < len {
            bytes.resize(POOL_BYTES, 0);
            fill(bytes)?;
            *used = 0;
        }
        taken.copy_from_slice(&bytes[*used..*used + len]);
        *used += len;
        Ok(taken)
    }
}

fn fill(bytes: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(bytes)
        .map_err(|err| Error::protocol(format!("the operating system gave no random bytes: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_handed_out_once_across_refills() {
        let tickets = Tickets::new();
        let mut seen = std::collections::HashSet::new();
        // 8-byte draws over three refills: a repeat among 24,000 random u64 would mean reuse.
        for _ in 0..(3 * POOL_BYTES / 8) {
            let bytes = tickets.take(8).unwrap();
            assert!(seen.insert(u64::from_le_bytes(bytes.try_into().unwrap())));
        }
        assert_eq!(tickets.take(POOL_BYTES + 1).unwrap().len(), POOL_BYTES + 1);
        assert!(tickets.take(0).unwrap().is_empty());
    }
}
