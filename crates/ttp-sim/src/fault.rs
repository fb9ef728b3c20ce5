//! Which request gets which fault, decided deterministically.
//!
//! The n-th request after a [`FaultConfig`] was installed gets a decision that depends only on
//! the fault seed and n. Under concurrency the mapping of requests to n follows arrival order,
//! which the simulator cannot control; a sequential client sees the same faults every run.

use crate::config::{FaultConfig, FaultKind, FaultTiming};
use crate::hash;

/// One decided fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) kind: FaultKind,
    /// Strike after the request was processed.
    pub(crate) after: bool,
    /// For [`FaultKind::Status`]: an HTML page (as proxies send) instead of an
    /// OperationOutcome.
    pub(crate) html: bool,
}

pub(crate) struct FaultPlan {
    cfg: FaultConfig,
    requests_seen: u64,
}

impl FaultPlan {
    pub(crate) fn new(cfg: FaultConfig) -> Self {
        Self {
            cfg,
            requests_seen: 0,
        }
    }

    /// The decision for the next request.
    pub(crate) fn next(&mut self) -> Option<Fault> {
        let n = self.requests_seen.to_le_bytes();
        self.requests_seen += 1;
        let cfg = &self.cfg;
        if cfg.kinds.is_empty() || !hash::chance(cfg.seed, "fault", &n, cfg.probability) {
            return None;
        }
        let pick = hash::hash(cfg.seed, "fault-kind", &n);
        let kind = cfg.kinds[(pick % cfg.kinds.len() as u64) as usize].clone();
        let flags = hash::hash(cfg.seed, "fault-flags", &n);
        let after = kind.can_follow_processing()
            && match cfg.when {
                FaultTiming::Before => false,
                FaultTiming::After => true,
                FaultTiming::Mixed => flags & 1 == 1,
            };
        Some(Fault {
            kind,
            after,
            html: flags & 2 == 2,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn plan(probability: f64, kinds: Vec<FaultKind>, when: FaultTiming) -> FaultPlan {
        FaultPlan::new(FaultConfig {
            probability,
            kinds,
            seed: 9,
            when,
        })
    }

    #[test]
    fn probability_zero_never_and_one_always() {
        let mut never = plan(0.0, vec![FaultKind::Drop], FaultTiming::Before);
        assert!((0..1000).all(|_| never.next().is_none()));
        let mut always = plan(1.0, vec![FaultKind::Drop], FaultTiming::Before);
        assert!((0..1000).all(|_| always.next().is_some()));
    }

    #[test]
    fn the_sequence_is_reproducible_and_uses_every_kind() {
        let kinds = vec![
            FaultKind::Status(503),
            FaultKind::Drop,
            FaultKind::Truncate,
            FaultKind::Malformed,
        ];
        let mut first = plan(0.5, kinds.clone(), FaultTiming::Mixed);
        let mut second = plan(0.5, kinds.clone(), FaultTiming::Mixed);
        let a: Vec<_> = (0..500).map(|_| first.next()).collect();
        let b: Vec<_> = (0..500).map(|_| second.next()).collect();
        assert_eq!(a, b);
        let faults: Vec<&Fault> = a.iter().flatten().collect();
        assert!(
            (200..300).contains(&faults.len()),
            "{} of 500",
            faults.len()
        );
        for kind in &kinds {
            assert!(
                faults.iter().any(|f| &f.kind == kind),
                "{kind:?} never chosen"
            );
        }
    }

    #[test]
    fn only_ambiguous_kinds_strike_after_processing() {
        let kinds = vec![
            FaultKind::Status(503),
            FaultKind::Status(502),
            FaultKind::Status429 {
                retry_after_secs: 3,
            },
            FaultKind::Malformed,
            FaultKind::Delay(Duration::from_secs(60)),
        ];
        let mut after = plan(1.0, kinds, FaultTiming::After);
        for _ in 0..500 {
            let fault = after.next().expect("probability 1");
            assert_eq!(fault.after, fault.kind.can_follow_processing(), "{fault:?}");
        }
        let mut mixed = plan(1.0, vec![FaultKind::Drop], FaultTiming::Mixed);
        let afters = (0..1000)
            .filter(|_| mixed.next().is_some_and(|f| f.after))
            .count();
        assert!((400..600).contains(&afters), "{afters} of 1000 after");
    }
}
