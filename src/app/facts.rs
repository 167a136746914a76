//! `facts`: gather the facts of many hosts, one round trip each, reporting every host's outcome.

use crate::inventory::Inventory;

/// One host's outcome in [`gather_many`].
#[derive(Debug)]
pub struct HostFacts {
    pub host: String,
    pub result: Result<crate::facts::Facts, crate::facts::FactsError>,
    /// Commands sent to the host while gathering (the design promises exactly one).
    pub round_trips: u64,
}

/// Gathers facts from many hosts at once, at most `parallel` in flight; results keep the order of
/// `hosts`. A host that fails does not stop the others.
pub async fn gather_many(
    inventory: &Inventory,
    hosts: &[String],
    parallel: usize,
) -> Vec<HostFacts> {
    use futures::StreamExt;
    futures::stream::iter(hosts.iter().cloned())
        .map(|host| async move {
            match inventory.transport(&host) {
                Err(e) => HostFacts {
                    host,
                    result: Err(e.into()),
                    round_trips: 0,
                },
                Ok(t) => {
                    let before = t.commands_run();
                    let result = crate::facts::gather_facts(&*t).await;
                    let round_trips = t.commands_run() - before;
                    HostFacts {
                        host,
                        result,
                        round_trips,
                    }
                }
            }
        })
        .buffered(parallel.max(1))
        .collect()
        .await
}
