//! The work a request started, and what it holds until that work really ends: a work slot, its
//! share of the memory budget, and a cancellation flag its loops check.
//!
//! - **Work slots** (`--max-concurrency`): a request takes one when it arrives (none free: 503
//!   `overloaded`). The slot is held by every clone of its [`Work`]: the handler, each blocking
//!   task started with [`spawn_blocking`], and the answer's body (`api::slots`), so a streamed
//!   answer or work that outlives its client stays counted until its last byte or step.
//! - **Memory budget**: before a request allocates in proportion to its input (a body, samples
//!   to generate, a chart to draw, trees to grow), it [`reserve`](Work::reserve)s an estimate
//!   of that memory from the process budget; an estimate over the per-request budget is refused
//!   (413), one that does not fit in what the other requests left is refused for now (503 with
//!   `Retry-After`). The reservation is given back when the work ends.
//! - **Cancellation**: when the client goes away or the request times out, the handler's future
//!   is dropped and its work is [`cancel`](Work::cancel)led; readers, scoring, fitting, sample
//!   generation and charting check [`cancelled`] between steps and stop.
//!
//! The request's work is found without being passed down: in the handler's task (a task-local
//! set by `api::slots`) and on the blocking threads started with [`spawn_blocking`] (a
//! thread-local). Work started with a plain `tokio::spawn` (a model commit that must finish)
//! belongs to no request and is never cancelled. This module uses nothing of ours.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The memory budget is counted in units of this many bytes (semaphore permits are `u32`).
const UNIT: u64 = 1024;

/// What a caller reserves at least at a time when it tops up a reservation as it grows, so a
/// body in small chunks (or state growing a little at a time) is not a reservation each.
pub const RESERVE_STEP: u64 = 1 << 20;

/// Most units one semaphore holds.
const MAX_UNITS: u64 = Semaphore::MAX_PERMITS as u64;

/// The service's work slots and memory budget, shared by every request.
#[derive(Clone)]
pub struct Limits(Arc<Shared>);

struct Shared {
    slots: Arc<Semaphore>,
    max_slots: usize,
    memory: Arc<Semaphore>,
    memory_units: u64,
    request_bytes: u64,
    cancelled: AtomicU64,
    stopped: AtomicU64,
    refused: AtomicU64,
}

/// Why memory could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// The request alone needs more than the per-request budget.
    #[error(
        "this request needs an estimated {needed_mib} MiB of working memory, more than the {limit_mib} MiB a request may use (NETSENTINEL_REQUEST_MEMORY_BUDGET_MIB); send less at once"
    )]
    Request { needed_mib: u64, limit_mib: u64 },
    /// The process budget is taken by other requests for now.
    #[error(
        "the service's memory budget ({limit_mib} MiB) is in use by other requests; retry shortly"
    )]
    Busy { limit_mib: u64 },
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

impl Limits {
    /// `max_slots` work slots, a process budget of `process_bytes` and at most `request_bytes`
    /// of it for one request.
    pub fn new(max_slots: usize, process_bytes: u64, request_bytes: u64) -> Self {
        let memory_units = (process_bytes / UNIT).clamp(1, MAX_UNITS);
        Self(Arc::new(Shared {
            slots: Arc::new(Semaphore::new(max_slots)),
            max_slots,
            memory: Arc::new(Semaphore::new(memory_units as usize)),
            memory_units,
            request_bytes: request_bytes.min(memory_units * UNIT),
            cancelled: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }))
    }

    /// A work slot for a new request, or `None` when every slot is taken.
    pub fn admit(&self) -> Option<Work> {
        let slot = self.0.slots.clone().try_acquire_owned().ok()?;
        let work = Work(Arc::new(Inner {
            limits: self.clone(),
            cancelled: AtomicBool::new(false),
            _slot: slot,
            reserved: Mutex::new(None),
        }));
        self.publish();
        Some(work)
    }

    /// Work slots held now (by handlers, blocking work, or answers being sent).
    pub fn slots_in_use(&self) -> usize {
        self.0.max_slots - self.0.slots.available_permits()
    }

    /// Bytes of the memory budget reserved now.
    pub fn memory_reserved(&self) -> u64 {
        (self.0.memory_units - self.0.memory.available_permits() as u64) * UNIT
    }

    /// The process budget, in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.0.memory_units * UNIT
    }

    /// The most one request may reserve, in bytes.
    pub fn request_budget(&self) -> u64 {
        self.0.request_bytes
    }

    /// Requests whose work was cancelled (client gone or timed out before the answer).
    pub fn cancelled(&self) -> u64 {
        self.0.cancelled.load(Ordering::Relaxed)
    }

    /// Cancelled work that a loop noticed and stopped early.
    pub fn stopped(&self) -> u64 {
        self.0.stopped.load(Ordering::Relaxed)
    }

    /// Reservations refused (over the request budget, or the process budget busy).
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }

    fn publish(&self) {
        metrics::gauge!("netsentinel_work_slots_in_use").set(self.slots_in_use() as f64);
        metrics::gauge!("netsentinel_memory_reserved_bytes").set(self.memory_reserved() as f64);
    }
}

/// One request's work: cloned into everything that works for it; the slot and the memory
/// reserved are given back when the last clone is dropped.
#[derive(Clone)]
pub struct Work(Arc<Inner>);

struct Inner {
    limits: Limits,
    cancelled: AtomicBool,
    _slot: OwnedSemaphorePermit,
    reserved: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The permits are released after this body; publish what the counts will be.
        let units = self
            .reserved
            .get_mut()
            .map(|r| r.as_ref().map_or(0, |p| p.num_permits()))
            .unwrap_or(0);
        let shared = &self.limits.0;
        let slots = shared.max_slots - shared.slots.available_permits() - 1;
        let reserved =
            shared.memory_units - shared.memory.available_permits() as u64 - units as u64;
        metrics::gauge!("netsentinel_work_slots_in_use").set(slots as f64);
        metrics::gauge!("netsentinel_memory_reserved_bytes").set((reserved * UNIT) as f64);
    }
}

impl Work {
    /// Marks the work cancelled (its client is gone or its time is up); loops stop at their
    /// next check.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::AcqRel) {
            self.0.limits.0.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("netsentinel_work_cancelled_total").increment(1);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Reserves `bytes` more of the memory budget for this request, until its work ends.
    pub fn reserve(&self, bytes: u64) -> Result<(), OverBudget> {
        let mut reserved = self.0.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let held = reserved.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT;
        self.reserve_more(&mut reserved, held, bytes)
    }

    /// Reserves what this request holds up to `total` bytes in all, in steps of at least
    /// `step` (never past the per-request budget): for memory observed as it grows, charged
    /// beyond what the request reserved already (from its body's size, say). Holding `total`
    /// or more already reserves nothing.
    pub fn reserve_total(&self, total: u64, step: u64) -> Result<(), OverBudget> {
        let mut reserved = self.0.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let held = reserved.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT;
        if total <= held {
            return Ok(());
        }
        let room = self.0.limits.0.request_bytes.saturating_sub(held);
        let more = (total - held).max(step.min(room));
        self.reserve_more(&mut reserved, held, more)
    }

    fn reserve_more(
        &self,
        reserved: &mut std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>>,
        held: u64,
        bytes: u64,
    ) -> Result<(), OverBudget> {
        let shared = &self.0.limits.0;
        let refuse = |e: OverBudget| {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("netsentinel_memory_refused_total").increment(1);
            Err(e)
        };
        let total = held.saturating_add(bytes);
        if total > shared.request_bytes {
            return refuse(OverBudget::Request {
                needed_mib: mib(total),
                limit_mib: mib(shared.request_bytes),
            });
        }
        let units = bytes.div_ceil(UNIT);
        if units == 0 {
            return Ok(());
        }
        let Ok(permit) = shared.memory.clone().try_acquire_many_owned(units as u32) else {
            return refuse(OverBudget::Busy {
                limit_mib: mib(shared.memory_units * UNIT),
            });
        };
        match reserved.as_mut() {
            Some(p) => p.merge(permit),
            None => **reserved = Some(permit),
        }
        self.0.limits.publish();
        Ok(())
    }

    /// Counts this work as cancelled work that stopped early, from where [`current`] cannot
    /// find it (rayon's pool).
    pub fn note_stopped(&self) {
        self.0.limits.0.stopped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("netsentinel_work_stopped_total").increment(1);
    }

    /// Bytes reserved so far.
    pub fn reserved(&self) -> u64 {
        let reserved = self.0.reserved.lock().unwrap_or_else(|e| e.into_inner());
        reserved.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT
    }
}

/// Memory the service keeps between requests (a detector's open windows of continuous ingest),
/// held against the process budget for as long as it is kept: what requests may reserve is what
/// the resident state leaves. Given back when dropped.
pub struct Resident {
    limits: Limits,
    permit: Option<OwnedSemaphorePermit>,
}

impl Limits {
    /// Holds nothing yet.
    pub fn resident(&self) -> Resident {
        Resident {
            limits: self.clone(),
            permit: None,
        }
    }
}

impl Resident {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64) * UNIT
    }

    /// Holds `bytes` from now on. Less: the rest is given back. More: taken over from what
    /// `work` reserved (its growth, kept past its request), then from the process budget
    /// (503 `Busy` when it has no room; nothing changes then).
    pub fn set(&mut self, bytes: u64, work: Option<&Work>) -> Result<(), OverBudget> {
        let want = bytes.div_ceil(UNIT).min(MAX_UNITS) as usize;
        let held = self.permit.as_ref().map_or(0, |p| p.num_permits());
        if want <= held {
            if let Some(p) = self.permit.as_mut() {
                drop(p.split(held - want));
            }
            self.limits.publish();
            return Ok(());
        }
        let mut more = want - held;
        let shared = &self.limits.0;
        let mut taken = None;
        if let Some(work) = work {
            let mut reserved = work.0.reserved.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = reserved.as_mut() {
                let n = more.min(r.num_permits());
                taken = r.split(n);
                more -= n;
            }
        }
        if more > 0 {
            let Ok(rest) = shared.memory.clone().try_acquire_many_owned(more as u32) else {
                // Given back to the request it came from, which drops it when it ends.
                if let (Some(t), Some(work)) = (taken, work) {
                    let mut reserved = work.0.reserved.lock().unwrap_or_else(|e| e.into_inner());
                    match reserved.as_mut() {
                        Some(r) => r.merge(t),
                        None => *reserved = Some(t),
                    }
                }
                shared.refused.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("netsentinel_memory_refused_total").increment(1);
                return Err(OverBudget::Busy {
                    limit_mib: mib(shared.memory_units * UNIT),
                });
            };
            taken = Some(match taken {
                Some(mut t) => {
                    t.merge(rest);
                    t
                }
                None => rest,
            });
        }
        if let Some(t) = taken {
            match self.permit.as_mut() {
                Some(p) => p.merge(t),
                None => self.permit = Some(t),
            }
        }
        self.limits.publish();
        Ok(())
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        let units = self.permit.take().map_or(0, |p| {
            let n = p.num_permits();
            drop(p);
            n
        });
        if units > 0 {
            self.limits.publish();
        }
    }
}

tokio::task_local! {
    static TASK_WORK: Work;
}

thread_local! {
    static THREAD_WORK: RefCell<Option<Work>> = const { RefCell::new(None) };
}

/// Runs `f` (a handler) as `work`: [`current`] finds it there and in the blocking tasks it starts.
pub async fn scope<F: Future>(work: Work, f: F) -> F::Output {
    TASK_WORK.scope(work, f).await
}

/// The work of the request being served here, if any.
pub fn current() -> Option<Work> {
    TASK_WORK
        .try_with(Work::clone)
        .ok()
        .or_else(|| THREAD_WORK.with(|w| w.borrow().clone()))
}

/// Whether the current request's work was cancelled; counts the stop (call it where the work
/// then stops).
pub fn cancelled() -> bool {
    let stop = current().is_some_and(|w| w.is_cancelled());
    if stop {
        note_stopped();
    }
    stop
}

/// A check to hand to code that runs where [`current`] cannot find the work (rayon's pool):
/// true once the current request's work is cancelled.
pub fn stop_check() -> impl Fn() -> bool + Send + Sync + 'static {
    let work = current();
    move || work.as_ref().is_some_and(Work::is_cancelled)
}

/// Counts cancelled work that stopped early (once per check that stopped it).
pub fn note_stopped() {
    match current() {
        Some(w) => w.note_stopped(),
        None => metrics::counter!("netsentinel_work_stopped_total").increment(1),
    }
}

/// Reserves memory for the current request (none: nothing to reserve against).
pub fn reserve(bytes: u64) -> Result<(), OverBudget> {
    match current() {
        Some(w) => w.reserve(bytes),
        None => Ok(()),
    }
}

/// `tokio::task::spawn_blocking` for a request's work: the task holds the request's slot and
/// memory until it ends, and [`current`] finds the work on its thread.
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let work = current();
    tokio::task::spawn_blocking(move || {
        let _entered = Entered(THREAD_WORK.with(|w| w.replace(work)));
        f()
    })
}

/// Puts back the thread's previous work when dropped (also when the task panics): the thread
/// goes back to the pool and must not keep this request's slot.
struct Entered(Option<Work>);

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        THREAD_WORK.with(|w| *w.borrow_mut() = previous);
    }
}

/// The physical memory of this machine in bytes, where it can be read (Linux: /proc/meminfo).
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_held_until_the_last_clone_is_dropped() {
        let limits = Limits::new(2, 1 << 30, 1 << 29);
        let a = limits.admit().unwrap();
        let b = limits.admit().unwrap();
        assert!(limits.admit().is_none(), "both slots are taken");
        let a2 = a.clone();
        drop(a);
        assert_eq!(limits.slots_in_use(), 2, "a clone still holds the slot");
        drop(a2);
        assert_eq!(limits.slots_in_use(), 1);
        drop(b);
        assert_eq!(limits.slots_in_use(), 0);
    }

    #[test]
    fn reservations_are_held_to_both_budgets_and_given_back() {
        let limits = Limits::new(4, 10 << 20, 6 << 20);
        let a = limits.admit().unwrap();
        a.reserve(4 << 20).unwrap();
        assert!(matches!(
            a.reserve(3 << 20),
            Err(OverBudget::Request {
                needed_mib: 7,
                limit_mib: 6
            })
        ));
        let b = limits.admit().unwrap();
        b.reserve(5 << 20).unwrap();
        let c = limits.admit().unwrap();
        assert!(matches!(c.reserve(2 << 20), Err(OverBudget::Busy { .. })));
        assert_eq!(limits.memory_reserved(), 9 << 20);
        assert_eq!(limits.refused(), 2);
        drop(a);
        c.reserve(2 << 20).unwrap();
        drop((b, c));
        assert_eq!(limits.memory_reserved(), 0);
    }

    #[test]
    fn resident_memory_takes_over_a_request_reservation_and_holds_the_process_budget() {
        let limits = Limits::new(4, 10 << 20, 6 << 20);
        let mut book = limits.resident();
        let a = limits.admit().unwrap();
        a.reserve(4 << 20).unwrap();
        book.set(3 << 20, Some(&a)).unwrap();
        assert_eq!((a.reserved(), book.bytes()), (1 << 20, 3 << 20));
        drop(a);
        assert_eq!(limits.memory_reserved(), 3 << 20, "kept past its request");
        // More than a request holds comes from the process budget, while it has room.
        let b = limits.admit().unwrap();
        b.reserve(6 << 20).unwrap();
        assert!(matches!(
            book.set(5 << 20, None),
            Err(OverBudget::Busy { .. })
        ));
        assert_eq!(book.bytes(), 3 << 20, "a refused set changes nothing");
        assert!(matches!(
            b.reserve(1 << 20),
            Err(OverBudget::Request { .. })
        ));
        let c = limits.admit().unwrap();
        assert!(
            matches!(c.reserve(2 << 20), Err(OverBudget::Busy { .. })),
            "requests get what the resident state leaves"
        );
        drop(b);
        book.set(5 << 20, None).unwrap();
        book.set(1 << 20, None).unwrap();
        assert_eq!(limits.memory_reserved(), 1 << 20);
        drop(book);
        assert_eq!(limits.memory_reserved(), 0);
    }

    #[tokio::test]
    async fn blocking_tasks_see_and_hold_the_work_of_their_request() {
        let limits = Limits::new(1, 1 << 20, 1 << 20);
        let work = limits.admit().unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        #[allow(clippy::async_yields_async)] // the handle is the point: awaited out of scope
        let task = scope(work.clone(), async {
            spawn_blocking(move || {
                wait.recv().unwrap();
                cancelled()
            })
        })
        .await;
        work.cancel();
        drop(work);
        assert_eq!(limits.slots_in_use(), 1, "the blocking task holds the slot");
        go.send(()).unwrap();
        assert!(task.await.unwrap(), "the task saw the cancellation");
        assert_eq!(limits.slots_in_use(), 0);
        assert_eq!((limits.cancelled(), limits.stopped()), (1, 1));
        assert!(current().is_none());
    }
}
