//! A persistent thread pool for the CPU backend.
//!
//! A job is `chunks` calls of one closure, `f(0) .. f(chunks - 1)`; the calling thread and
//! `n - 1` workers claim chunk indices from a shared counter until none are left, so a worker
//! that is late (descheduled on a busy machine) costs at most its claimed chunk, never the
//! whole share of a static split.
//!
//! Workers spin on an epoch counter for a short while after each job (the ops of one token
//! follow each other within microseconds), then park on a condition variable. A worker takes
//! part in a job only by *entering* it (a CAS on `state` that fails once the job is closed);
//! the caller closes the job when no chunk is left and waits only for workers that entered,
//! which keeps the job's closure (on the caller's stack) alive for as long as anyone can
//! call it.
//!
//! One job runs at a time. A second thread calling [`ThreadPool::run`] while a job is in
//! flight does not wait: it runs all its chunks itself (correct, just not parallel).

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// `state` bit: the job takes no more workers.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// The job as the workers see it: a type-erased pointer to a `&dyn Fn(usize) + Sync` that
/// lives on the caller's stack until the job is closed and every entered worker has left.
type JobRef<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job: wakes the workers.
    epoch: AtomicU64,
    /// `CLOSED` or the number of workers inside the open job.
    state: AtomicUsize,
    /// Points at the caller's `JobRef` while a job is open.
    job: AtomicPtr<()>,
    chunks: AtomicUsize,
    /// The next unclaimed chunk.
    next: AtomicUsize,
    /// Workers parked (or about to park) on `cond`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Shared {
    /// Claims and runs chunks until none is left; returns false if a chunk panicked.
    fn work(&self, f: JobRef<'_>) -> bool {
        let chunks = self.chunks.load(Ordering::Relaxed);
        let mut ok = true;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= chunks {
                return ok;
            }
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
                ok = false;
            }
        }
    }
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serializes jobs; `try_lock` failing means another thread owns the workers.
    dispatch: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads)
    }
}

thread_local! {
    /// Set on pool workers, so that a job which itself calls `run` runs serially instead
    /// of deadlocking.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

impl ThreadPool {
    /// A pool of `threads` threads in all (the caller included); at least 1.
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            state: AtomicUsize::new(CLOSED),
            job: AtomicPtr::new(std::ptr::null_mut()),
            chunks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for tid in 1..threads {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("plumb-cpu-{tid}"))
                .spawn(move || worker(s));
            match spawned {
                Ok(h) => workers.push(h),
                // Could not start a thread: run with the ones we have.
                Err(_) => break,
            }
        }
        let threads = workers.len() + 1;
        ThreadPool {
            shared,
            workers,
            threads,
            dispatch: Mutex::new(()),
        }
    }

    /// Threads that share a job (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(i)` once for every `i` in `0..chunks`, spread over the pool's threads, and
    /// returns when all calls have returned. A panic in any call is re-raised here.
    pub fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        if chunks <= 1 || self.threads == 1 || IN_WORKER.with(|w| w.get()) {
            return (0..chunks).for_each(f);
        }
        let Ok(_guard) = self.dispatch.try_lock() else {
            // Another thread's job holds the workers: do all the chunks here.
            return (0..chunks).for_each(f);
        };
        let s = &*self.shared;
        let job: JobRef<'_> = f;
        s.panicked.store(false, Ordering::Relaxed);
        s.chunks.store(chunks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.job
            .store(&job as *const JobRef<'_> as *mut (), Ordering::Relaxed);
        // Opening the job publishes the stores above to workers that enter it.
        s.state.store(0, Ordering::Release);
        // SeqCst pairs with the sleepers protocol in `worker`: either a parking worker sees
        // the new epoch, or we see it counted in `sleepers` and wake it.
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cond.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| s.work(job)));
        // No chunk is left to claim: close the job and wait for the workers inside it. The
        // job's closure lives on this stack frame, so this wait happens even on a panic.
        s.state.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        while s.state.load(Ordering::Acquire) != CLOSED {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a CPU backend job panicked");
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cond.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: Arc<Shared>) {
    IN_WORKER.with(|w| w.set(true));
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin first, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                l = s.cond.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(l);
        }
        if s.shutdown.load(Ordering::Relaxed) {
            return;
        }
        seen = s.epoch.load(Ordering::Acquire);
        // Enter the open job, if there still is one.
        let mut st = s.state.load(Ordering::Acquire);
        let entered = loop {
            if st & CLOSED != 0 {
                break false;
            }
            match s
                .state
                .compare_exchange_weak(st, st + 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => st = now,
            }
        };
        if !entered {
            continue;
        }
        let p = s.job.load(Ordering::Relaxed) as *const JobRef<'static>;
        // SAFETY: we entered an open job (the Acquire CAS pairs with the caller's Release
        // store that opened it, after it stored `job`), and the caller keeps the `JobRef`
        // alive until every entered worker has left (the decrement below).
        let f: JobRef<'_> = unsafe { *p };
        s.work(f);
        s.state.fetch_sub(1, Ordering::Release);
    }
}

/// Part `i` of `n` of `0..total`, in whole multiples of `align` (the last part takes the
/// remainder).
pub fn split(total: usize, n: usize, i: usize, align: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let units = total.div_ceil(align);
    let lo = (units * i / n * align).min(total);
    let hi = (units * (i + 1) / n * align).min(total);
    lo..hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_chunk_runs_once() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for chunks in [0, 1, 2, 7, 64] {
                for _ in 0..50 {
                    let hits: Vec<AtomicUsize> = (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                    pool.run(chunks, &|c| {
                        hits[c].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                }
            }
        }
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(SPIN * 4);
        let sum = AtomicUsize::new(0);
        pool.run(4, &|t| {
            sum.fetch_add(t + 1, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn concurrent_callers_fall_back_to_serial() {
        let pool = ThreadPool::new(2);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let n = AtomicUsize::new(0);
                        pool.run(5, &|_| {
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(n.load(Ordering::Relaxed), 5);
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_chunk_is_reported() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|c| assert!(c != 5, "boom"))
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn split_covers_the_range() {
        for total in [0, 1, 5, 576, 769] {
            for n in 1..9 {
                for align in [1, 4, 16] {
                    let mut next = 0;
                    for i in 0..n {
                        let r = split(total, n, i, align);
                        assert_eq!(r.start, next);
                        next = r.end;
                    }
                    assert_eq!(next, total);
                }
            }
        }
    }
}
