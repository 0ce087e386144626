//! Attempts in flight in this process, per endpoint and in total: the one count the worker and
//! the synchronous test-event route (`POST /admin/webhooks/{id}/test`) both go by, so a test
//! cannot open more connections to an endpoint, or in all, than the caps allow.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[derive(Default)]
pub struct InFlight {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    per_endpoint: HashMap<String, usize>,
    total: usize,
}

/// One attempt's place in the count; released on drop (the attempt finished or was aborted).
pub struct Slot {
    registry: Arc<InFlight>,
    endpoint: String,
}

impl InFlight {
    /// Takes a slot if the endpoint has fewer than `per_endpoint` attempts out and the process
    /// fewer than `total`.
    pub fn try_take(
        self: &Arc<Self>,
        endpoint: &str,
        per_endpoint: usize,
        total: usize,
    ) -> Option<Slot> {
        let mut counts = self.counts.lock().expect("in-flight counts");
        let n = counts.per_endpoint.get(endpoint).copied().unwrap_or(0);
        if n >= per_endpoint || counts.total >= total {
            return None;
        }
        counts.per_endpoint.insert(endpoint.to_string(), n + 1);
        counts.total += 1;
        Some(Slot {
            registry: self.clone(),
            endpoint: endpoint.to_string(),
        })
    }

    pub fn endpoint(&self, endpoint: &str) -> usize {
        let counts = self.counts.lock().expect("in-flight counts");
        counts.per_endpoint.get(endpoint).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.counts.lock().expect("in-flight counts").total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.registry.counts.lock().expect("in-flight counts");
        if let Some(n) = counts.per_endpoint.get_mut(&self.endpoint) {
            *n -= 1;
            if *n == 0 {
                counts.per_endpoint.remove(&self.endpoint);
            }
        }
        counts.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_respect_both_caps_and_come_back_on_drop() {
        let registry = Arc::new(InFlight::default());
        let a1 = registry.try_take("a", 2, 3).unwrap();
        let _a2 = registry.try_take("a", 2, 3).unwrap();
        assert!(registry.try_take("a", 2, 3).is_none(), "endpoint cap");
        let _b1 = registry.try_take("b", 2, 3).unwrap();
        assert!(registry.try_take("c", 2, 3).is_none(), "total cap");
        drop(a1);
        assert_eq!(registry.endpoint("a"), 1);
        let _c = registry.try_take("c", 2, 3).unwrap();
        assert_eq!(registry.total(), 3);
    }
}
