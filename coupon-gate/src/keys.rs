//! The Redis key layout of a campaign.
//!
//! Every key of one campaign carries the campaign id as its Redis Cluster hash tag
//! (`coupon:{spring-sale}:users`), so the scripts, which touch several keys at once, run on a
//! single node of a cluster.

use crate::{CampaignId, UserId};

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
    /// Sorted set of a draw's pre-queue: user id, score = the user's ticket (a random 53-bit
    /// integer, lowest wins). Removed when the draw ends.
    pub(crate) queue: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, campaign: &CampaignId) -> Self {
        let base = format!("{prefix}:{{{campaign}}}");
        Self {
            meta: format!("{base}:meta"),
            users: format!("{base}:users"),
            free: format!("{base}:free"),
            outbox: format!("{base}:outbox"),
            queue: format!("{base}:queue"),
        }
    }

    /// The bucket holding `user`: `users:<the id's last digits>` for a numeric id, `users:<a
    /// stable hash of the id, in as many digits>` for any other, or `users:0` when the campaign
    /// has one bucket. The same rule as `bucket_of` in prelude.lua, which the scripts use; the
    /// campaign tests pin that the two agree.
    pub(crate) fn user_bucket(&self, digits: usize, user: &UserId) -> String {
        let id = user.as_str();
        if digits == 0 {
            return format!("{}:0", self.users);
        }
        if id.bytes().all(|b| b.is_ascii_digit()) {
            let tail = &id[id.len().saturating_sub(digits)..];
            return format!("{}:{tail}", self.users);
        }
        let modulus = 10u64.pow(u32::try_from(digits).unwrap_or(u32::MAX).min(19));
        let bucket = u64::from(hash(id)) % modulus;
        format!("{}:{bucket:0digits$}", self.users)
    }

    /// Every bucket a campaign of `digits` can have (see [`Keys::user_bucket`]): `users:0` for
    /// none, else every string of 1 to `digits` decimal digits (a numeric id shorter than
    /// `digits` names the bucket of its whole self). About `1.11 * 10^digits` names, which
    /// [`Keys::bucket_digits`] keeps at a ninth of the quota or less.
    pub(crate) fn all_buckets(&self, digits: usize) -> Vec<String> {
        self.bucket_names(digits).collect()
    }

    /// The names [`Keys::all_buckets`] lists, one at a time: a campaign of a large quota has
    /// millions.
    pub(crate) fn bucket_names(&self, digits: usize) -> impl Iterator<Item = String> + '_ {
        let widths = if digits == 0 {
            0..=0
        } else {
            1..=digits.min(19)
        };
        widths.flat_map(move |width| {
            let count = 10u64.pow(u32::try_from(width).unwrap_or(19));
            // Width 0 (no digits) names the one bucket `users:0`.
            (0..count).map(move |n| format!("{}:{n:0width$}", self.users))
        })
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

    /// The pub/sub channel on which the scripts announce an outbox that holds work again (see
    /// `announce_outbox` in prelude.lua, which builds the same name).
    pub(crate) fn outbox_ready(prefix: &str) -> String {
        format!("{prefix}:outbox-ready")
    }

    /// The sorted set of draws not yet run under `prefix`: campaign id, score = `opens` (ms).
    pub(crate) fn draws(prefix: &str) -> String {
        format!("{prefix}:draws")
    }

    /// The hash recording where the outboxes under `prefix` are delivered: topic, and the
    /// broker cluster's id when known.
    pub(crate) fn destination(prefix: &str) -> String {
        format!("{prefix}:destination")
    }

    /// The set of all campaign ids under `prefix`, read by relays to find outboxes; an archived
    /// campaign leaves it for [`Keys::archived`].
    pub(crate) fn registry(prefix: &str) -> String {
        format!("{prefix}:campaigns")
    }

    /// The set of the ids of archived campaigns under `prefix` (their tombstones are their meta
    /// keys; see archive.lua).
    pub(crate) fn archived(prefix: &str) -> String {
        format!("{prefix}:archived")
    }
}

/// djb2 over the id's bytes, modulo 2^32: simple enough to compute the same in Lua, whose
/// numbers are doubles (every step stays below 2^38).
fn hash(id: &str) -> u32 {
    id.bytes().fold(5381u32, |h, b| {
        h.wrapping_mul(33).wrapping_add(u32::from(b))
    })
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
        let user = |id: &str| UserId::new(id).unwrap();
        assert_eq!(keys.user_bucket(0, &user("12345")), "p:{c}:users:0");
        assert_eq!(keys.user_bucket(2, &user("12345")), "p:{c}:users:45");
        assert_eq!(keys.user_bucket(4, &user("7")), "p:{c}:users:7");
        assert_eq!(keys.user_bucket(4, &user("10007")), "p:{c}:users:0007");
        assert_eq!(keys.user_bucket(0, &user("auth0|5f3a9c")), "p:{c}:users:0");
        // djb2("ab") = (5381 * 33 + 97) * 33 + 98 = 5863208
        assert_eq!(hash("ab"), 5_863_208);
        assert_eq!(keys.user_bucket(4, &user("ab")), "p:{c}:users:3208");
        assert_eq!(keys.user_bucket(8, &user("ab")), "p:{c}:users:05863208");
    }

    #[test]
    fn every_bucket_a_user_can_land_in_is_listed() {
        let keys = Keys::new("p", &CampaignId::new("c").unwrap());
        assert_eq!(keys.all_buckets(0), ["p:{c}:users:0"]);
        let all = keys.all_buckets(2);
        assert_eq!(all.len(), 110);
        for id in ["7", "10", "12345", "99", "auth0|5f3a9c", "ab", "x"] {
            let user = UserId::new(id).unwrap();
            assert!(all.contains(&keys.user_bucket(2, &user)), "{id}");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let id = CampaignId::new("spring-sale").unwrap();
        let k = Keys::new("coupon", &id);
        assert_eq!(k.users, "coupon:{spring-sale}:users");
        for key in [&k.meta, &k.users, &k.free, &k.outbox, &k.queue] {
            assert!(key.starts_with("coupon:{spring-sale}:"), "{key}");
        }
    }
}
