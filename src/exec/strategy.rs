//! Splitting a task's hosts into batches for its strategy, and the max-fail rule. Pure.

use crate::plan::Strategy;
use crate::plan::{BatchSize, Percent};

/// Hosts in a batch for a size: a number of hosts, or a share of all the task's hosts rounded up,
/// never less than one.
fn size_of(b: BatchSize, total: usize) -> usize {
    match b {
        BatchSize::Hosts(n) => n as usize,
        BatchSize::Percent(Percent(p)) => (total * p as usize).div_ceil(100),
    }
    .max(1)
}

/// Consumes `hosts` in batches of `sizes`; the last size repeats for the remainder.
fn split(hosts: &[String], sizes: &[BatchSize], total: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = hosts;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes
            .get(i)
            .or(sizes.last())
            .map_or(rest.len(), |b| size_of(*b, total));
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        out.push(batch.to_vec());
        rest = tail;
        i += 1;
    }
    out
}

/// The batches a task runs in, in order. Parallel is a single batch (bounded by the parallelism
/// limit at execution); serial is one host at a time; rolling follows `batches`; canary runs its
/// canary batch first, then the rest in `batches` (or all at once).
pub fn batches(
    hosts: &[String],
    strategy: Strategy,
    sizes: &[BatchSize],
    canary: Option<BatchSize>,
) -> Vec<Vec<String>> {
    let total = hosts.len();
    if hosts.is_empty() {
        return Vec::new();
    }
    match strategy {
        Strategy::Parallel => vec![hosts.to_vec()],
        Strategy::Serial => hosts.iter().map(|h| vec![h.clone()]).collect(),
        Strategy::Rolling => split(hosts, sizes, total),
        Strategy::Canary => {
            let first = size_of(canary.unwrap_or(BatchSize::Hosts(1)), total).min(total);
            let (canary, rest) = hosts.split_at(first);
            let mut out = vec![canary.to_vec()];
            out.extend(split(rest, sizes, total));
            out
        }
    }
}

/// Whether failures stop the rollout: the share of the task's hosts that failed so far must
/// exceed `max_fail`; without a limit, any failure stops it.
pub fn exceeds_max_fail(failed: usize, hosts: usize, max_fail: Option<Percent>) -> bool {
    if failed == 0 {
        return false;
    }
    match max_fail {
        None => true,
        Some(Percent(p)) => failed * 100 > hosts * p as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    fn sizes(b: &[Vec<String>]) -> Vec<usize> {
        b.iter().map(Vec::len).collect()
    }

    #[test]
    fn rolling_percentages_repeat_the_last_size() {
        // Ansible's example: 20 hosts at 30% -> 6/6/6/2.
        let b = batches(
            &hosts(20),
            Strategy::Rolling,
            &[BatchSize::Percent(Percent(30))],
            None,
        );
        assert_eq!(sizes(&b), vec![6, 6, 6, 2]);
        let b = batches(
            &hosts(20),
            Strategy::Rolling,
            &[
                BatchSize::Hosts(1),
                BatchSize::Hosts(5),
                BatchSize::Percent(Percent(20)),
            ],
            None,
        );
        assert_eq!(sizes(&b), vec![1, 5, 4, 4, 4, 2]);
        assert_eq!(b.concat(), hosts(20));
    }

    #[test]
    fn small_percentages_still_take_one_host() {
        let b = batches(
            &hosts(3),
            Strategy::Rolling,
            &[BatchSize::Percent(Percent(10))],
            None,
        );
        assert_eq!(sizes(&b), vec![1, 1, 1]);
    }

    #[test]
    fn canary_then_rest() {
        let b = batches(&hosts(10), Strategy::Canary, &[], Some(BatchSize::Hosts(2)));
        assert_eq!(sizes(&b), vec![2, 8]);
        let b = batches(&hosts(10), Strategy::Canary, &[BatchSize::Hosts(4)], None);
        assert_eq!(sizes(&b), vec![1, 4, 4, 1]);
    }

    #[test]
    fn serial_and_parallel() {
        assert_eq!(
            sizes(&batches(&hosts(3), Strategy::Serial, &[], None)),
            vec![1, 1, 1]
        );
        assert_eq!(
            sizes(&batches(&hosts(3), Strategy::Parallel, &[], None)),
            vec![3]
        );
    }

    #[test]
    fn max_fail_must_be_exceeded() {
        assert!(!exceeds_max_fail(0, 4, None));
        assert!(exceeds_max_fail(1, 4, None));
        assert!(!exceeds_max_fail(1, 4, Some(Percent(25))));
        assert!(exceeds_max_fail(2, 4, Some(Percent(25))));
        assert!(exceeds_max_fail(1, 1, Some(Percent(99))));
    }
}
