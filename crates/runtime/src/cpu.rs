//! CPU time an instance spends, for the autoscaler's `target_cpu`: a wasm request's task is
//! timed by the thread's CPU clock around each poll (the guest runs inside those polls, on
//! wasmtime's fibers); a container's comes from the engine's stats.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// `inner`, adding the CPU time each of its polls takes to `total`.
pub(crate) struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    total: Arc<AtomicU64>,
}

impl<F> CpuTimed<F> {
    pub(crate) fn new(inner: F, total: Arc<AtomicU64>) -> Self {
        Self {
            inner: Box::pin(inner),
            total,
        }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before = thread_cpu_nanos();
        let poll = self.inner.as_mut().poll(cx);
        let spent = thread_cpu_nanos().saturating_sub(before);
        self.total.fetch_add(spent, Ordering::Relaxed);
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_poll_is_counted_and_an_idle_wait_is_not() {
        let total = Arc::new(AtomicU64::new(0));
        CpuTimed::new(
            async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            },
            total.clone(),
        )
        .await;
        let idle = total.load(Ordering::Relaxed);
        assert!(idle < 20_000_000, "sleeping costs no CPU: {idle} ns");
        // Spin until this thread has used 50 ms of CPU (however long that takes on a busy
        // machine).
        CpuTimed::new(
            async {
                let started = thread_cpu_nanos();
                let mut x = 0u64;
                while thread_cpu_nanos() - started < 50_000_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            },
            total.clone(),
        )
        .await;
        let busy = total.load(Ordering::Relaxed) - idle;
        assert!(
            busy >= 50_000_000,
            "spinning 50 ms of CPU is counted: {busy} ns"
        );
    }
}
