//! The gate's test helpers: the workspace testkit, a gate over a scratch key prefix, and
//! shorthands for valid ids.

#![allow(dead_code, missing_docs, unused_imports)]

pub use coupon_testkit::{
    RedisServer, Scratch, connect, eventually, free_port, info_field, redis_url, script_calls,
};

use std::time::Duration;

use coupon_gate::{CampaignId, Gate, UserId};
use futures_util::{Stream, StreamExt};
use redis::aio::MultiplexedConnection;

/// A gate whose keys live under the scratch prefix.
pub trait ScratchGate {
    async fn gate(&self) -> Gate<MultiplexedConnection>;
}

impl ScratchGate for Scratch {
    async fn gate(&self) -> Gate<MultiplexedConnection> {
        Gate::with_key_prefix(connect(self.url()).await, self.prefix.clone()).expect("valid prefix")
    }
}

pub fn campaign(id: &str) -> CampaignId {
    CampaignId::new(id).expect("valid campaign id")
}

pub fn user(id: u64) -> UserId {
    UserId::from_number(id).expect("valid user id")
}

/// The payload of the next message of a subscription, which must come `within` the time given.
pub async fn next_payload(
    messages: &mut (impl Stream<Item = redis::Msg> + Unpin),
    within: Duration,
) -> String {
    let message = tokio::time::timeout(within, messages.next())
        .await
        .unwrap_or_else(|_| panic!("a message within {within:?}"))
        .expect("the subscription is open");
    message.get_payload::<String>().unwrap()
}

/// The messages of `channel` on the Redis at `url`, subscribed when this returns.
pub async fn subscribe(url: &str, channel: &str) -> impl Stream<Item = redis::Msg> + Unpin + use<> {
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub.into_on_message()
}
