//! The Redis key layout of a campaign.
//!
//! Every key of one campaign carries the campaign id as its Redis Cluster hash tag
//! (`coupon:{spring-sale}:users`), so the scripts, which touch several keys at once, run on a
//! single node of a cluster.

use crate::CampaignId;

/// The keys of one campaign under a prefix.
pub(crate) struct Keys {
    /// Hash: quota, opens and closes (ms, 0 for no bound), next (the highest seq handed out),
    /// issued (users holding a seq), digits (how the user buckets are named).
    pub(crate) meta: String,
    /// Base name of the user buckets: hashes of user id -> seq, one per value of the user id's
    /// last `digits` decimal digits (see [`Keys::user_bucket`]).
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

    /// The bucket holding `user`: `users:<last digits of the id>`, or `users:0` when the
    /// campaign has one bucket. The same rule as `bucket_of` in prelude.lua, which the scripts
    /// use; the campaign tests pin that the two agree.
    pub(crate) fn user_bucket(&self, digits: usize, user: u64) -> String {
        let id = user.to_string();
        if digits == 0 {
            return format!("{}:0", self.users);
        }
        let tail = &id[id.len().saturating_sub(digits)..];
        format!("{}:{tail}", self.users)
    }

    /// How many last digits of the user id name a campaign's user buckets: the fewest that keep
    /// buckets at about 100 users when the quota is filled, so that each stays a compact listpack
    /// (Redis converts a hash beyond 128 entries by default). Fixed at creation.
    pub(crate) fn bucket_digits(quota: u32) -> usize {
        let mut digits = 0;
        let mut buckets: u64 = 1;
        while u64::from(quota) > 100 * buckets {
            digits += 1;
            buckets *= 10;
        }
        digits
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
    fn buckets_hold_about_a_hundred_users_at_the_quota() {
        assert_eq!(Keys::bucket_digits(1), 0);
        assert_eq!(Keys::bucket_digits(100), 0);
        assert_eq!(Keys::bucket_digits(101), 1);
        assert_eq!(Keys::bucket_digits(1_000_000), 4);
        assert_eq!(Keys::bucket_digits(u32::MAX), 8);
        let keys = Keys::new("p", &CampaignId::new("c").unwrap());
        assert_eq!(keys.user_bucket(0, 12345), "p:{c}:users:0");
        assert_eq!(keys.user_bucket(2, 12345), "p:{c}:users:45");
        assert_eq!(keys.user_bucket(4, 7), "p:{c}:users:7");
        assert_eq!(keys.user_bucket(4, 10007), "p:{c}:users:0007");
    }

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
