//! Admission, the same for every driver: an instance takes a request unless it is stopping or
//! already runs `max_concurrency`; it counts what became of its requests; and on stop it waits
//! for the admitted ones to end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::{RuntimeError, Usage};

/// One instance's admission and counters.
pub(crate) struct Gate {
    instance: String,
    max_concurrency: usize,
    permits: Arc<Semaphore>,
    stopped: AtomicBool,
    requests: AtomicU64,
    in_flight: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
}

/// A request's admission: its concurrency permit and its place in `in_flight`, released together
/// when the ticket is dropped (when the request is over, its answer's body included).
pub(crate) struct Ticket {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// A gate for `instance` letting in at most `max_concurrency` (at least 1) requests at once.
    pub(crate) fn new(instance: &str, max_concurrency: usize) -> Arc<Self> {
        let max_concurrency = max_concurrency.max(1);
        Arc::new(Gate {
            instance: instance.to_owned(),
            max_concurrency,
            permits: Arc::new(Semaphore::new(max_concurrency)),
            stopped: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// Admits one request, or says why not: [`RuntimeError::Stopped`] or
    /// [`RuntimeError::Overloaded`] (counted as rejected); neither started anything.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Ticket, RuntimeError> {
        let stopped = || RuntimeError::Stopped {
            instance: self.instance.clone(),
        };
        if self.stopped.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(stopped()),
            Err(TryAcquireError::NoPermits) if self.stopped.load(Ordering::SeqCst) => {
                return Err(stopped());
            }
            Err(TryAcquireError::NoPermits) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(RuntimeError::Overloaded {
                    instance: self.instance.clone(),
                    limit: self.max_concurrency,
                });
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            _permit: permit,
            gate: self.clone(),
        })
    }

    /// Whether the gate refuses requests: its instance is stopping or stopped.
    pub(crate) fn is_closed(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Counts an admitted request that failed.
    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, with the memory figure the driver knows.
    pub(crate) fn usage(&self, memory_bytes: Option<u64>, cpu_nanos: Option<u64>) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            memory_bytes,
            cpu_nanos,
        }
    }

    /// Refuses new requests from now on, and waits until the admitted ones have ended, for at
    /// most `bound` when given. A second call finds the gate closed and returns at once.
    pub(crate) async fn close(&self, bound: Option<Duration>) {
        self.stopped.store(true, Ordering::SeqCst);
        // Every permit back means every admitted request has ended.
        let all = u32::try_from(self.max_concurrency).unwrap_or(u32::MAX);
        let drained = match bound {
            Some(bound) => tokio::time::timeout(bound, self.permits.acquire_many(all))
                .await
                .ok(),
            None => Some(self.permits.acquire_many(all).await),
        };
        self.permits.close();
        drop(drained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_up_to_the_limit_and_none_once_closed() {
        let gate = Gate::new("web-1", 1);
        let ticket = gate.admit().expect("the first is admitted");
        assert!(matches!(
            gate.admit(),
            Err(RuntimeError::Overloaded { limit: 1, .. })
        ));
        assert_eq!(gate.usage(None, None).in_flight, 1);
        drop(ticket);
        gate.count_failure();
        let usage = gate.usage(Some(7), Some(9));
        assert_eq!(
            (
                usage.requests,
                usage.in_flight,
                usage.failures,
                usage.rejected
            ),
            (1, 0, 1, 1)
        );
        assert_eq!((usage.memory_bytes, usage.cpu_nanos), (Some(7), Some(9)));

        let held = gate.admit().expect("admitted again");
        let started = tokio::time::Instant::now();
        gate.close(Some(Duration::from_millis(50))).await;
        assert!(started.elapsed() >= Duration::from_millis(50), "it waited");
        assert!(matches!(gate.admit(), Err(RuntimeError::Stopped { .. })));
        drop(held);
        gate.close(None).await;
    }
}
