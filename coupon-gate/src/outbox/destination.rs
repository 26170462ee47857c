//! Where a key prefix's outboxes are delivered: one topic (and the broker cluster that holds
//! it, when the relay can read its id), recorded in Redis by the first relay that runs on the
//! prefix. Any relay takes any campaign's outbox, so two deployments that shared a prefix but
//! named different topics would split a campaign's admissions between the topics; a relay whose
//! destination is not the recorded one delivers nothing (see [`Outbox::bind`]), and an operator
//! moves the binding deliberately ([`Outbox::move_destination`]).

use redis::aio::ConnectionLike;

use super::Outbox;
use crate::Error;
use crate::keys::Keys;

/// Records `ARGV[1]` (topic) and `ARGV[2]` (cluster id, or empty) unless a topic is recorded;
/// fills in the cluster id of a binding to the same topic that lacks one. Answers the binding.
const BIND: &str = r"
local key = KEYS[1]
if redis.call('HSETNX', key, 'topic', ARGV[1]) == 1 then
  if ARGV[2] ~= '' then redis.call('HSET', key, 'cluster', ARGV[2]) end
elseif ARGV[2] ~= '' and redis.call('HGET', key, 'topic') == ARGV[1]
    and not redis.call('HGET', key, 'cluster') then
  redis.call('HSET', key, 'cluster', ARGV[2])
end
return {redis.call('HGET', key, 'topic'), redis.call('HGET', key, 'cluster')}
";

/// A topic, and the id of the broker cluster that holds it when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The topic the outboxes are delivered to.
    pub topic: String,
    /// The broker cluster's id (Kafka's `cluster.id`), `None` when it could not be read.
    pub cluster: Option<String>,
}

impl Destination {
    /// Whether a relay delivering to `other` may deliver this binding's outboxes: the same
    /// topic, and the same cluster unless either id is unknown.
    pub fn admits(&self, other: &Destination) -> bool {
        self.topic == other.topic
            && match (&self.cluster, &other.cluster) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cluster {
            Some(cluster) => write!(f, "topic {} of cluster {cluster}", self.topic),
            None => write!(f, "topic {} (cluster id unknown)", self.topic),
        }
    }
}

impl<C> Outbox<C>
where
    C: ConnectionLike + Clone + Send + Sync,
{
    /// Binds the prefix's outboxes to `ours` unless they are bound, and answers the binding
    /// that holds: `ours` (with the cluster id filled in, if it was missing) or another
    /// destination, which the caller must not deliver to.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn bind(&self, ours: &Destination) -> Result<Destination, Error> {
        let key = Keys::destination(&self.shared.prefix);
        let (topic, cluster): (Option<String>, Option<String>) = redis::Script::new(BIND)
            .key(key)
            .arg(&ours.topic)
            .arg(ours.cluster.as_deref().unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Destination {
            topic: topic.unwrap_or_default(),
            cluster,
        })
    }

    /// The binding of the prefix's outboxes; `None` before a relay ran on the prefix.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn destination(&self) -> Result<Option<Destination>, Error> {
        let key = Keys::destination(&self.shared.prefix);
        // HGETALL rather than HMGET, which the admission script's calls are counted by.
        let mut fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(fields.remove("topic").map(|topic| Destination {
            topic,
            cluster: fields.remove("cluster"),
        }))
    }

    /// Binds the prefix's outboxes to `to` whatever they were bound to, and answers the binding
    /// it replaced. Relays bound elsewhere stop delivering within a second, and relays of `to`
    /// start; what is still in the outboxes goes to `to`.
    ///
    /// # Errors
    ///
    /// A Redis failure.
    pub async fn move_destination(&self, to: &Destination) -> Result<Option<Destination>, Error> {
        let before = self.destination().await?;
        let key = Keys::destination(&self.shared.prefix);
        let mut fields = vec![("topic", to.topic.as_str())];
        if let Some(cluster) = &to.cluster {
            fields.push(("cluster", cluster));
        }
        redis::pipe()
            .atomic()
            .del(&key)
            .hset_multiple(&key, &fields)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, cluster: Option<&str>) -> Destination {
        Destination {
            topic: topic.to_owned(),
            cluster: cluster.map(str::to_owned),
        }
    }

    #[test]
    fn a_binding_admits_its_topic_on_its_cluster() {
        assert!(at("t", Some("a")).admits(&at("t", Some("a"))));
        assert!(at("t", None).admits(&at("t", Some("a"))));
        assert!(at("t", Some("a")).admits(&at("t", None)));
        assert!(!at("t", Some("a")).admits(&at("t", Some("b"))));
        assert!(!at("t", None).admits(&at("u", None)));
    }
}
