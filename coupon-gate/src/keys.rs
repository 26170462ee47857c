//! The Redis key layout of a campaign.
//!
//! Every key of one campaign carries the campaign id as its Redis Cluster hash tag
//! (`coupon:{spring-sale}:users`), so the scripts, which touch several keys at once, run on a
//! single node of a cluster.

use crate::CampaignId;

/// The keys of one campaign under a prefix.
pub(crate) struct Keys {
    /// Hash: quota, opens, closes, next.
    pub(crate) meta: String,
    /// Hash: user id -> seq of every admitted user.
    pub(crate) users: String,
    /// Sorted set of seqs given back by `release`, reused lowest first.
    pub(crate) free: String,
    /// Stream of admissions and releases for the relay.
    pub(crate) outbox: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, campaign: &CampaignId) -> Self {
        let base = format!("{prefix}:{{{campaign}}}");
        Self {
            meta: format!("{base}:meta"),
            users: format!("{base}:users"),
            free: format!("{base}:free"),
            outbox: format!("{base}:outbox"),
        }
    }

    /// The pub/sub channel of campaign changes under `prefix`.
    pub(crate) fn changes(prefix: &str) -> String {
        format!("{prefix}:changes")
    }

    /// The set of all campaign ids under `prefix`, read by relays to find outboxes.
    pub(crate) fn registry(prefix: &str) -> String {
        format!("{prefix}:campaigns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let id = CampaignId::new("spring-sale").unwrap();
        let k = Keys::new("coupon", &id);
        assert_eq!(k.users, "coupon:{spring-sale}:users");
        for key in [&k.meta, &k.users, &k.free, &k.outbox] {
            assert!(key.starts_with("coupon:{spring-sale}:"), "{key}");
        }
    }
}
