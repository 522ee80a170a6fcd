//! The lock of the fixed-heap allocators (`memsys3`, `memsys5`): a test-and-set lock whose
//! release is a plain store.
//!
//! # Why not `std::sync::Mutex`
//!
//! A futex mutex must wake sleeping waiters, so its release is a locked read-modify-write (an
//! exchange that tells whether anyone sleeps). On x86 a locked instruction waits until every
//! store before it has left the store buffer; the critical section of a buddy or first-fit
//! allocator writes free-list links into cold heap lines, so that release stalls on their cache
//! misses. Measured on the memsys5 trace replay (`bench/`): 38.5 ns per malloc+free pair with
//! `std::sync::Mutex`, 29.5 with this lock, 25.9 with no lock at all (a single-threaded
//! experiment, not a configuration).
//!
//! # Algorithm
//!
//! One `AtomicBool`. Taking the lock is a compare-exchange `false → true` (acquire); releasing it
//! is a store of `false` (release), which on x86 is an ordinary `mov`. Nobody is ever woken: a
//! thread that finds the lock taken polls it, in three stages,
//!
//! 1. spinning ([`SPINS`] reads), with a pause between two reads that doubles up to
//!    `2^MAX_BACKOFF_LOG` spin hints: the critical sections are tens of nanoseconds long and the
//!    holder usually runs on another core;
//! 2. then yielding its CPU between reads ([`YIELDS`] times), so that a holder preempted on the
//!    same CPU can run and finish;
//! 3. then sleeping [`NAP`] between reads, so that a waiter of a higher real-time priority than
//!    a preempted holder does not keep it off the CPU forever.
//!
//! Each poll reads the flag before trying the compare-exchange, so waiters do not pull its
//! cache line away from the holder while it is set. The stages count every poll of one wait,
//! also when the lock changed hands meanwhile: under heavy contention the loser of many races
//! ends up sleeping, which leaves the winner stretches of calls on warm cache lines (measured
//! with two threads on one unsharded heap: better aggregate throughput than restarting the
//! stages, and than `std::sync::Mutex`; see bench/notes.md).
//!
//! # Properties
//!
//! - Mutual exclusion: only the compare-exchange that sees `false` takes the lock; the release
//!   store happens-before the acquire of the next holder, so the protected data is seen whole.
//! - No allocation, no call into SQLite, no other lock: it can be taken on any allocation path.
//!   The only system calls are `sched_yield` and `nanosleep`, on the contended path.
//! - Not fair: a thread that releases and takes the lock again at once may win over a waiter.
//!   Under contention the sharded memsys5 (`shards=N`) is the answer, not fairness.
//! - Not reentrant, and no poisoning: a panic while it is held releases it through the guard's
//!   `Drop` (the allocators' state is then checked by their own assertions, as before).

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Reads of the flag, with a pause between them, before a waiter starts yielding its CPU.
pub const SPINS: u32 = 200;
/// Yields of the CPU before a waiter starts sleeping between reads.
pub const YIELDS: u32 = 20;
/// A spinning waiter's pause between two reads doubles up to `2^MAX_BACKOFF_LOG` spin hints.
const MAX_BACKOFF_LOG: u32 = 6;
/// How long a waiter sleeps between reads once it has yielded [`YIELDS`] times.
pub const NAP: Duration = Duration::from_micros(50);

/// Mutual exclusion over a `T`; see the [module documentation](self).
pub struct Lock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a `LockGuard`, and at most one guard exists at a time
// (the flag is set by exactly one successful compare-exchange and cleared by that guard's drop),
// so sharing the lock between threads hands the `T` from one thread to another, never to two at
// once: `T: Send` is what that needs.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    /// A lock, not held, over `data`.
    pub const fn new(data: T) -> Lock<T> {
        Lock {
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }

    /// Wait until the lock is free, take it, and return the guard that releases it.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T> {
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        LockGuard { lock: self }
    }

    /// The slow path of [`lock`](Self::lock): poll until the flag is seen clear and taken.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut polls: u32 = 0;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if polls < SPINS {
                    for _ in 0..1u32 << polls.min(MAX_BACKOFF_LOG) {
                        std::hint::spin_loop();
                    }
                } else if polls < SPINS + YIELDS {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(NAP);
                }
                polls = polls.saturating_add(1);
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The data, without locking: `&mut self` proves nobody else holds the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Proof that the lock is held; gives access to the data, releases the lock when dropped.
pub struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: this guard exists, so the flag was set by its `lock` call and no other guard
        // exists until it is dropped: nobody else reaches the data meanwhile.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_publishes() {
        // Each thread does a non-atomic read-modify-write of a pair under the lock; any overlap
        // of two critical sections would lose an increment or tear the pair.
        let threads = 4;
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let lock = Arc::new(Lock::new((0u64, 0u64)));
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        let mut g = lock.lock();
                        let (a, b) = *g;
                        assert_eq!(a, b);
                        *g = (a + 1, b + 1);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let total = threads as u64 * rounds;
        assert_eq!(*lock.lock(), (total, total));
    }

    #[test]
    fn a_waiter_gets_the_lock_after_a_long_hold() {
        // The holder keeps the lock past the spinning and yielding stages, so the waiter reaches
        // the sleeping stage and must still get the lock once it is released.
        let lock = Arc::new(Lock::new(0u32));
        let g = lock.lock();
        let waiter = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                let mut g = lock.lock();
                *g += 1;
            })
        };
        std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
        drop(g);
        waiter.join().unwrap();
        assert_eq!(*lock.lock(), 1);
    }

    #[test]
    fn released_on_unwind() {
        let lock = Lock::new(1u8);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = lock.lock();
            panic!("inside");
        }));
        assert!(r.is_err());
        assert_eq!(*lock.lock(), 1);
    }
}
