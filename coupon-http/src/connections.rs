//! Who holds the server's connections: at most so many per client address, and, when every slot
//! is taken, the one idle the longest gives its slot to a new client.
//!
//! A client that opens connections and sends nothing, or leaves them idle between requests,
//! would otherwise hold every slot while new clients wait (as nginx frees its "reusable"
//! keep-alive connections when it runs out). An idle connection has received nothing of a next
//! request, so closing it loses no request; its client reconnects when it has one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;

use crate::watchdog::Watchdog;

/// How long a connection must have been idle before it may be closed for a new client. A client
/// in the middle of a conversation (its next request on its way, or about to be) is not cut
/// off; connections left idle, or opened and left silent, are.
const MIN_IDLE: Duration = Duration::from_millis(250);

/// The open connections.
pub(crate) struct Connections {
    /// Most connections from one address; addresses in `exempt` have no limit.
    per_address: usize,
    /// The trusted proxies, whose connections carry many clients.
    exempt: Vec<IpNet>,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_address: HashMap<IpAddr, usize>,
    open: HashMap<u64, Arc<Watchdog>>,
    next_id: u64,
}

/// Why a connection is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooManyFromAddress;

/// A connection's place in the registry; dropping it frees the place.
pub(crate) struct Ticket {
    id: u64,
    address: IpAddr,
    connections: Arc<Connections>,
}

impl Connections {
    pub(crate) fn new(per_address: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            exempt,
            registry: Mutex::default(),
        })
    }

    /// Counts a connection from `address`, unless the address already holds its share.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, TooManyFromAddress> {
        let exempt = self.exempt.iter().any(|net| net.contains(&address));
        let mut registry = self.registry.lock().expect("connections lock");
        let count = registry.by_address.entry(address).or_insert(0);
        if !exempt && *count >= self.per_address {
            return Err(TooManyFromAddress);
        }
        *count += 1;
        let id = registry.next_id;
        registry.next_id += 1;
        Ok(Ticket {
            id,
            address,
            connections: self.clone(),
        })
    }

    /// Asks the connection idle the longest to close; false when none has been idle for
    /// [`MIN_IDLE`].
    pub(crate) fn evict_longest_idle(&self) -> bool {
        let registry = self.registry.lock().expect("connections lock");
        // Of connections idle equally long (the clock counts milliseconds), the older goes.
        let longest = registry
            .open
            .iter()
            .filter_map(|(id, dog)| {
                let idle = dog.idle_for().filter(|idle| *idle >= MIN_IDLE)?;
                Some(((idle, std::cmp::Reverse(*id)), dog))
            })
            .max_by_key(|(key, _)| *key);
        match longest {
            Some((_, dog)) => {
                dog.evict();
                true
            }
            None => false,
        }
    }

    /// Connections admitted and not closed yet.
    #[cfg(test)]
    fn open(&self) -> usize {
        let registry = self.registry.lock().expect("connections lock");
        registry.by_address.values().sum()
    }
}

impl Ticket {
    /// The connection is served from now on, watched by `watchdog`: while idle, it may be
    /// evicted for a new client.
    pub(crate) fn serving(&self, watchdog: Arc<Watchdog>) {
        let mut registry = self.connections.registry.lock().expect("connections lock");
        registry.open.insert(self.id, watchdog);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut registry = self.connections.registry.lock().expect("connections lock");
        registry.open.remove(&self.id);
        if let Some(count) = registry.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                registry.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn dog() -> Arc<Watchdog> {
        Arc::new(Watchdog::new(
            Duration::from_secs(10),
            Duration::from_secs(5),
        ))
    }

    #[test]
    fn an_address_holds_at_most_its_share_unless_it_is_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let connections = Connections::new(2, vec!["10.0.0.0/8".parse().unwrap()]);
        let client: IpAddr = "127.0.0.2".parse().unwrap();
        let first = connections.admit(client).unwrap();
        let _second = connections.admit(client).unwrap();
        assert!(connections.admit(client).is_err());
        let other = connections.admit("127.0.0.3".parse().unwrap());
        assert!(other.is_ok());
        let proxied: Vec<_> = (0..5).map(|_| connections.admit(proxy)).collect();
        assert!(proxied.iter().all(Result::is_ok));
        drop(first);
        let again = connections.admit(client);
        assert!(again.is_ok());
        drop(proxied);
        // The second, the other address's, and the one admitted again.
        assert_eq!(connections.open(), 3);
    }

    #[tokio::test]
    async fn the_longest_idle_connection_is_evicted_and_a_busy_one_never() {
        let connections = Connections::new(10, Vec::new());
        let address: IpAddr = "127.0.0.2".parse().unwrap();
        let serve = |dog: &Arc<Watchdog>| {
            let ticket = connections.admit(address).unwrap();
            ticket.serving(dog.clone());
            ticket
        };
        let (oldest, busy) = (dog(), dog());
        let _a = serve(&oldest);
        let _b = serve(&busy);
        busy.received();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _c = serve(&dog());
        assert!(
            !connections.evict_longest_idle(),
            "none has been idle long enough"
        );
        tokio::time::sleep(MIN_IDLE).await;
        // Admitted but not served yet: never a candidate.
        let _waiting = connections.admit(address).unwrap();
        assert!(connections.evict_longest_idle());
        let expiry = tokio::time::timeout(Duration::from_secs(1), oldest.expired()).await;
        assert_eq!(expiry.ok(), Some(crate::watchdog::Expiry::Evicted));

        let only_busy = Connections::new(10, Vec::new());
        let d = only_busy.admit(address).unwrap();
        d.serving(busy);
        assert!(
            !only_busy.evict_longest_idle(),
            "a busy connection is never evicted"
        );
    }
}
