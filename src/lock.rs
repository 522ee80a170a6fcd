//! The lock of the fixed-heap allocators (`memsys3`, `memsys5`, `tlsf`): a test-and-set lock whose
//! release is a plain store, biased to the first thread that takes it.
//!
//! # Why not `std::sync::Mutex`
//!
//! A futex mutex must wake sleeping waiters, so its release is a locked read-modify-write (an
//! exchange that tells whether anyone sleeps). On x86 a locked instruction waits until every
//! store before it has left the store buffer; the critical section of a buddy or first-fit
//! allocator writes free-list links into cold heap lines, so that release stalls on their cache
//! misses. A lock released with a plain store does not wait for them (bench/notes.md, "Log", has
//! the trace-replay figures of the three locks tried).
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
//! ends up sleeping, which leaves the winner stretches of calls on warm cache lines (two threads
//! on one unsharded heap get more done together that way than by restarting the stages, or with
//! `std::sync::Mutex`: bench/notes.md).
//!
//! # Bias (x86-64 Linux)
//!
//! Most programs allocate from one thread (SQLite itself serializes its calls when memstatus is
//! on), and even an uncontended compare-exchange costs a locked instruction per call. So the
//! first thread to take the lock becomes its *owner*: it enters by storing `owner_in = true`
//! and checking that `bias` still names it, and leaves by storing `owner_in = false`; no locked
//! instruction either way. Any other thread that wants the lock *revokes* the bias for good,
//! once: holding the test-and-set lock, it stores `bias = REVOKED`, calls
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` and waits until `owner_in` is false; from then
//! on everybody, the former owner included, uses the test-and-set lock.
//!
//! Why this is exclusive although the owner's store and load may be reordered by the processor
//! (store-load): `membarrier` runs a full memory barrier on every CPU that runs a thread of the
//! process (a thread that is not running gets one when it is scheduled again) before it returns.
//! If the owner's store of `owner_in = true` came before that barrier in its program order, the
//! revoker sees it after `membarrier` and waits; if it came after, the owner's check of `bias`,
//! which follows the store, also comes after the barrier and sees `REVOKED`, so the owner backs
//! out (`owner_in = false`) and takes the test-and-set lock, which the revoker holds. The owner
//! is identified by its thread pointer (`%fs:0`, unique among live threads; a thread that gets a
//! dead owner's pointer may use the bias, the dead owner being outside). The bias is used only
//! when `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` succeeded (Linux 4.14 and later); elsewhere,
//! and under Miri, the lock is the test-and-set lock alone. After `fork` the child registers
//! again before revoking. When `membarrier` is refused at revocation, the same guarantee comes
//! from a TLB shootdown (next section).
//!
//! # When `membarrier` is refused: a TLB shootdown
//!
//! A sandbox may forbid `membarrier` after the bias was taken (a seccomp filter installed once
//! the program is initialized, as browsers and hardened services do). Under the preload that
//! program is someone else's, so the revoker does not give up: it forces the barrier through
//! the kernel's TLB shootdown, as the .NET runtime's `FlushProcessWriteBuffers` does on kernels
//! without `membarrier`. A private anonymous page is mapped (and `mlock`ed, best effort) when
//! the process registers for `membarrier`: eagerly, because a sandbox that forbids `membarrier`
//! later may forbid `mmap` too, whereas it usually allows `mprotect`, which the C library needs
//! to create threads. To revoke, the page is made read-write, written, made inaccessible, made
//! read-write again and written again. Why this runs a full barrier on every CPU that runs a
//! thread of the process before the revoker reads `owner_in`, on x86-64 Linux:
//!
//! - Making a present, accessed, writable page inaccessible obliges Linux to invalidate its
//!   translation on every CPU that may cache it before `mprotect` returns (else a thread could
//!   still write through a stale entry). The write just before makes the entry present,
//!   accessed and dirty, so the kernel cannot skip the flush as unneeded (it skips it for an
//!   entry never accessed). The flush goes to the CPUs in the process's `mm_cpumask`, which
//!   holds every CPU running one of its threads, by inter-processor interrupts, and the sender
//!   waits until each target has handled its interrupt.
//! - An interrupt is taken between two instructions of the owner: those before it have
//!   executed, those after it start afresh once the handler returns with `iret`, a serializing
//!   instruction; the handler's acknowledgement is a store, which x86 makes visible only after
//!   the owner's earlier stores. The revoker stored `REVOKED` before its system call, whose
//!   locked instructions make that store visible before the kernel picks the CPUs to interrupt.
//!   So when `mprotect` returns, either the owner's `owner_in = true` is visible to the revoker,
//!   or the owner's check of `bias` comes after the interrupt and sees `REVOKED`: what the
//!   argument above takes from `membarrier`.
//! - A CPU the flush skips (not in the mask, or running a kernel thread with the address space
//!   loaded lazily) runs no thread of the process at the moment. Before it runs one it goes
//!   through a context switch, a full barrier, which the kernel's own TLB bookkeeping orders
//!   after the flush began (it then flushes for itself): it sees `REVOKED`, and the stores of a
//!   thread it switched out earlier are visible.
//! - If the kernel takes the page's entry away between the first write and the `mprotect`
//!   (migrating the page; reclaiming it if `mlock` failed), that `mprotect` flushes nothing;
//!   but the kernel path that took the entry flushes the same way, and the second write faults
//!   and waits until that path is done.
//! - Revokers of different locks may run the sequence at once: they take turns (an atomic flag,
//!   polled like the lock). Interleaved, one could find the page already inaccessible and
//!   flush nothing, or make it inaccessible between the other's `mprotect` and write, which
//!   would then fault for good. The page is never unmapped. A child of `fork` keeps the page
//!   (not its `mlock`, which the second write makes up for); like a lock held across `fork`,
//!   a flag held by another thread at that moment stays held in the child.
//!
//! The argument rests on how Linux flushes other CPUs' TLBs on x86, not on an architectural
//! guarantee. An AMD processor with INVLPGB lets Linux (6.15 and later) invalidate another
//! CPU's TLB without interrupting it, hence without a barrier there: where CPUID reports
//! INVLPGB the fallback refuses. A hypervisor that flushes a guest's TLBs for it (the
//! paravirtual flushes of Hyper-V and Xen) is trusted to interrupt the vCPUs it flushes, as
//! KVM's does (it interrupts running vCPUs and defers the flush of a preempted one to its next
//! entry, a barrier). Only when the fallback cannot serve either (INVLPGB, no page, `mprotect`
//! refused too) does the revoker abort the process, with a message naming the cause and
//! `bias=off`: going on could let two threads into the allocator at once.
//!
//! # Properties
//!
//! - Mutual exclusion: only the compare-exchange that sees `false` takes the lock; the release
//!   store happens-before the acquire of the next holder, so the protected data is seen whole.
//! - No allocation, no call into SQLite, no other lock (but the fallback barrier's flag, taken
//!   with nothing inside but system calls): it can be taken on any allocation path. The only
//!   system calls are `sched_yield` and `nanosleep`, on the contended path, one `membarrier`
//!   registration per process when a lock is first taken (with the `mmap` and `mlock` of the
//!   fallback's page), and one `membarrier` per lock when a second thread first takes it (three
//!   or four `mprotect` instead when `membarrier` is refused).
//! - Not fair: a thread that releases and takes the lock again at once may win over a waiter.
//!   Under contention the sharded memsys5 (`shards=N`) is the answer, not fairness.
//! - Not reentrant, and no poisoning: a panic while it is held releases it through the guard's
//!   `Drop` (the allocators' state is then checked by their own assertions, as before).
//!
//! # Turning the bias off (`bias=off`)
//!
//! A process that forbids `membarrier` with a seccomp filter *before* the first lock is taken
//! only loses the bias (the registration fails, every lock is a test-and-set lock); one that
//! forbids it *after* goes on with the TLB shootdown above. The backends' spec key `bias=off`
//! ([`Lock::forbid_bias`]) remains for what the fallback cannot cover: a sandbox that forbids
//! `mprotect` as well, a processor with INVLPGB under such a sandbox, a hypervisor one does not
//! trust to interrupt the vCPUs it flushes; and for programs that want from the allocator no
//! `membarrier` or `mprotect` call, no locked page and no interrupts sent to their CPUs. The
//! locks are then never biased; each call costs an uncontended compare-exchange (a few
//! nanoseconds).

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Reads of the flag, with a pause between them, before a waiter starts yielding its CPU.
pub const SPINS: u32 = 200;
/// Yields of the CPU before a waiter starts sleeping between reads.
pub const YIELDS: u32 = 20;
/// A spinning waiter's pause between two reads doubles up to `2^MAX_BACKOFF_LOG` spin hints.
const MAX_BACKOFF_LOG: u32 = 6;
/// How long a waiter sleeps between reads once it has yielded [`YIELDS`] times.
pub const NAP: Duration = Duration::from_micros(50);

/// `bias` once revoked (or never allowed): everybody uses the test-and-set lock.
const REVOKED: usize = 1;
/// `bias` before any thread took the lock.
const UNOWNED: usize = 0;

/// Mutual exclusion over a `T`; see the [module documentation](self).
pub struct Lock<T> {
    /// The test-and-set lock.
    locked: AtomicBool,
    /// The owner's thread pointer, [`UNOWNED`] or [`REVOKED`].
    bias: AtomicUsize,
    /// The owner is inside (written by the owner only).
    owner_in: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a `LockGuard`, and at most one guard exists at a time
// (a test-and-set guard: the flag is set by exactly one successful compare-exchange and cleared
// by that guard's drop; a biased guard: only the owner takes one, and a revoker waits for it to
// be dropped before it goes on, see the module documentation), so sharing the lock between
// threads hands the `T` from one thread to another, never to two at once: `T: Send` is what that
// needs.
unsafe impl<T: Send> Sync for Lock<T> {}

impl<T> Lock<T> {
    /// A lock, not held, over `data`.
    pub const fn new(data: T) -> Lock<T> {
        Lock {
            locked: AtomicBool::new(false),
            bias: AtomicUsize::new(UNOWNED),
            owner_in: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }

    /// Wait until the lock is free, take it, and return the guard that releases it.
    ///
    /// The owner's path is inlined: one load of `bias` compared with the thread pointer (a
    /// thread pointer is stored there only when biasing is on, see [`lock_slow`]), the store
    /// of `owner_in` and the second load of `bias`. Everything else is out of line.
    ///
    /// [`lock_slow`]: Self::lock_slow
    #[inline(always)]
    pub fn lock(&self) -> LockGuard<'_, T> {
        if let Some(tp) = bias::thread_pointer() {
            if self.bias.load(Ordering::Relaxed) == tp {
                if let Some(g) = self.enter_as_owner(tp) {
                    return g;
                }
            }
        }
        self.lock_slow()
    }

    /// The owner `me` enters: `None` when the bias was revoked meanwhile.
    #[inline(always)]
    fn enter_as_owner(&self, me: usize) -> Option<LockGuard<'_, T>> {
        self.owner_in.store(true, Ordering::Relaxed);
        // The processor may still let the load below pass the store above; the revoker's
        // `membarrier` covers that (module documentation). The compiler must not reorder them,
        // nor move the critical section above the check.
        compiler_fence(Ordering::SeqCst);
        if self.bias.load(Ordering::Relaxed) == me {
            return Some(LockGuard {
                lock: self,
                biased: true,
            });
        }
        // Revoked meanwhile: leave, and queue on the test-and-set lock.
        self.owner_in.store(false, Ordering::Release);
        None
    }

    /// Not the owner (yet): become it when nobody took the lock before and biasing is on here,
    /// else take the test-and-set lock.
    #[inline(never)]
    fn lock_slow(&self) -> LockGuard<'_, T> {
        // Asked only while nobody took the lock yet: a lock whose bias is forbidden
        // (`forbid_bias`) never makes a `membarrier` call.
        if self.bias.load(Ordering::Relaxed) == UNOWNED {
            if let Some(me) = bias::me() {
                // The first thread to get here becomes the owner.
                if self
                    .bias
                    .compare_exchange(UNOWNED, me, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    if let Some(g) = self.enter_as_owner(me) {
                        return g;
                    }
                }
            }
        }
        self.lock_unbiased()
    }

    /// Take the test-and-set lock, then make sure no owner can be inside: revoke a bias that is
    /// still on (once per lock), or forbid one when nobody took it yet.
    fn lock_unbiased(&self) -> LockGuard<'_, T> {
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        if self.bias.load(Ordering::Relaxed) != REVOKED {
            self.revoke();
        }
        LockGuard {
            lock: self,
            biased: false,
        }
    }

    /// With the test-and-set lock held: end the bias for good and wait until the owner is out.
    #[cold]
    #[inline(never)]
    fn revoke(&self) {
        // Holders of the test-and-set lock are the only writers of `REVOKED`; a thread that has
        // not yet taken the bias can no longer take it (its compare-exchange fails).
        let was = self.bias.swap(REVOKED, Ordering::Relaxed);
        if was == UNOWNED {
            // Nobody ever entered as owner.
            return;
        }
        bias::barrier_all();
        let mut polls: u32 = 0;
        // Acquire: everything the owner did inside happens-before what the revoker does next.
        while self.owner_in.load(Ordering::Acquire) {
            wait(&mut polls);
        }
    }

    /// The slow path of [`lock`](Self::lock): poll until the flag is seen clear and taken.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut polls: u32 = 0;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                wait(&mut polls);
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

    /// Never bias this lock: every thread, the first included, takes the test-and-set lock, and
    /// the lock makes no `membarrier` or `mprotect` call (the spec key `bias=off`; see "Turning
    /// the bias off" in the module documentation). `&mut self`: nobody can hold the lock
    /// meanwhile.
    pub fn forbid_bias(&mut self) {
        *self.bias.get_mut() = REVOKED;
    }

    /// Whether this lock is biased to a thread now (for tests and diagnostics).
    pub fn is_biased(&self) -> bool {
        !matches!(self.bias.load(Ordering::Relaxed), UNOWNED | REVOKED)
    }
}

/// One poll of a waiter that has polled `polls` times: spin (with backoff), yield, or nap.
fn wait(polls: &mut u32) {
    if *polls < SPINS {
        for _ in 0..1u32 << (*polls).min(MAX_BACKOFF_LOG) {
            std::hint::spin_loop();
        }
    } else if *polls < SPINS + YIELDS {
        std::thread::yield_now();
    } else {
        std::thread::sleep(NAP);
    }
    *polls = polls.saturating_add(1);
}

/// Proof that the lock is held; gives access to the data, releases the lock when dropped.
pub struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
    /// Taken as the owner (released through `owner_in`), else through the test-and-set lock.
    biased: bool,
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
        if self.biased {
            self.lock.owner_in.store(false, Ordering::Release);
        } else {
            self.lock.locked.store(false, Ordering::Release);
        }
    }
}

/// The owner's identity and the revoker's barrier.
mod bias {
    /// The calling thread's identity for the bias (its thread pointer, never 0 or 1), or `None`
    /// when biasing is off here: no `membarrier`, or not x86-64 Linux, or Miri.
    #[inline(always)]
    pub fn me() -> Option<usize> {
        imp::me()
    }

    /// Run a full memory barrier on every CPU that runs a thread of this process: with
    /// `membarrier`, else with the fallback (a TLB shootdown); abort the process when neither
    /// can serve.
    pub fn barrier_all() {
        imp::barrier_all()
    }

    /// The calling thread's pointer where biasing can exist at all (x86-64 Linux, not Miri),
    /// whether or not it is on; `None` elsewhere. A lock's `bias` holds a thread pointer only
    /// when [`me`] returned it, so comparing with this one suffices on the owner's path.
    #[inline(always)]
    pub fn thread_pointer() -> Option<usize> {
        imp::thread_pointer()
    }

    /// Tests reach the fallback barrier directly, and can make revocations use it.
    #[cfg(all(test, target_arch = "x86_64", target_os = "linux", not(miri)))]
    pub use imp::{fallback, SKIP_MEMBARRIER};

    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    mod imp {
        use std::arch::asm;
        use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

        const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
        const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

        /// 0: not asked yet; 1: biasing off; 2: on (the process is registered).
        static STATE: AtomicU8 = AtomicU8::new(0);

        #[inline(always)]
        pub fn me() -> Option<usize> {
            let on = match STATE.load(Relaxed) {
                2 => true,
                1 => false,
                _ => ask(),
            };
            if !on {
                return None;
            }
            thread_pointer()
        }

        #[inline(always)]
        pub fn thread_pointer() -> Option<usize> {
            let tp: usize;
            // SAFETY: on x86-64 Linux `%fs:0` holds the thread control block's pointer to
            // itself (the TLS ABI), readable by the thread at any time; nothing is written.
            unsafe {
                asm!(
                    "mov {tp}, qword ptr fs:[0]",
                    tp = out(reg) tp,
                    options(nostack, readonly, preserves_flags),
                )
            };
            // A thread pointer is a real, aligned address: never UNOWNED (0) or REVOKED (1).
            (tp > super::super::REVOKED).then_some(tp)
        }

        /// Register for private expedited membarriers (once per process), and map the
        /// fallback barrier's page while the sandbox, if any, still allows `mmap`.
        #[cold]
        fn ask() -> bool {
            let on = register();
            if on {
                // A failure here is not fatal: `fallback::barrier` tries again if it is ever
                // needed, and aborts when it still cannot map the page.
                fallback::prepare();
            }
            STATE.store(if on { 2 } else { 1 }, Relaxed);
            on
        }

        fn register() -> bool {
            // SAFETY: the membarrier system call with a command and flags 0 reads and writes
            // no memory of the caller.
            unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    0,
                    0,
                ) == 0
            }
        }

        /// Tests only: skip `membarrier`, so that revocations take the fallback barrier.
        #[cfg(test)]
        pub static SKIP_MEMBARRIER: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);

        pub fn barrier_all() {
            // SAFETY: as in `register`.
            let run = || unsafe {
                libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0
            };
            #[cfg(test)]
            let run = || !SKIP_MEMBARRIER.load(Relaxed) && run();
            // A child of `fork` is not registered (the registration belongs to the parent's
            // address space): register, then try again.
            if run() || (register() && run()) {
                return;
            }
            // The registration succeeded once in this process, so only a seccomp filter
            // installed since (or a kernel refusing for another reason) gets here: the same
            // guarantee from a TLB shootdown ("When membarrier is refused" in the module
            // documentation).
            let refusal = match fallback::barrier() {
                Ok(()) => return,
                Err(r) => r,
            };
            // Going on without a barrier could let two threads into the allocator at once.
            let parts: [&[u8]; 3] = [
                b"sqlalloc: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed (a seccomp \
                  filter installed after the allocator's first use?) and so did the fallback \
                  barrier: ",
                refusal.cause().as_bytes(),
                b"; a second thread cannot take the memsys3/memsys5 lock safely; add bias=off \
                  to the backend's options (e.g. memsys5:heap=64M,bias=off); aborting\n",
            ];
            let iov = parts.map(|p| libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: p.len(),
            });
            // SAFETY: writes the three live buffers `iov` describes to standard error; the
            // kernel only reads them (the `*mut` of `iovec` is the C declaration's, not a
            // write).
            unsafe { libc::writev(2, iov.as_ptr(), iov.len() as libc::c_int) };
            std::process::abort();
        }

        /// The fallback barrier: a TLB shootdown forced with `mprotect` on a private page.
        pub mod fallback {
            use std::ptr;
            use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

            /// The private page (null until mapped). Never unmapped once published.
            static PAGE: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
            /// Held by the thread running the `mprotect` sequence on [`PAGE`].
            static BUSY: AtomicBool = AtomicBool::new(false);

            /// Why the fallback barrier could not be given.
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub enum Refusal {
                /// The CPU can invalidate other CPUs' TLBs without interrupting them (AMD's
                /// INVLPGB, which Linux 6.15 and later use for threads on several CPUs).
                BroadcastFlush,
                /// The page could not be mapped.
                NoPage,
                /// `mprotect` on the page failed (forbidden too?).
                Mprotect,
            }

            impl Refusal {
                /// The cause, for the abort message.
                pub fn cause(self) -> &'static str {
                    match self {
                        Refusal::BroadcastFlush => {
                            "this CPU can flush other CPUs' TLBs without interrupting them \
                             (INVLPGB), so an mprotect TLB shootdown is no barrier"
                        }
                        Refusal::NoPage => "mmap of its private page failed",
                        Refusal::Mprotect => "mprotect of its private page failed",
                    }
                }
            }

            fn page_len() -> usize {
                // SAFETY: sysconf reads no memory of the caller (glibc answers from the
                // auxiliary vector, without a system call).
                let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
                usize::try_from(n).unwrap_or(4096)
            }

            /// Whether the CPU has INVLPGB: then Linux may invalidate this process's TLB
            /// entries on other CPUs by broadcast, with no interrupt, hence no barrier there.
            /// CPUID in a virtual machine reports what the guest kernel sees, so this is also
            /// the answer for a guest.
            fn broadcast_flush() -> bool {
                use std::arch::x86_64::__cpuid;
                // SAFETY: CPUID exists on every x86-64 processor and only writes registers
                // (the intrinsic is safe in recent Rust; the block is for older compilers).
                #[allow(unused_unsafe)]
                let (max, ext) = unsafe {
                    let max = __cpuid(0x8000_0000).eax;
                    let ext = if max >= 0x8000_0008 {
                        __cpuid(0x8000_0008).ebx
                    } else {
                        0
                    };
                    (max, ext)
                };
                max >= 0x8000_0008 && ext & (1 << 3) != 0
            }

            /// Map the page, once per process (at registration, while `mmap` is surely
            /// allowed), and lock it in memory (best effort: it only keeps reclaim away, the
            /// second touch of [`barrier`] covers a page the kernel takes away meanwhile).
            /// Whether the page is mapped.
            pub fn prepare() -> bool {
                if !PAGE.load(Ordering::Acquire).is_null() {
                    return true;
                }
                let len = page_len();
                // SAFETY: a new private anonymous mapping: no memory of the process is
                // touched, the kernel chooses the (page-aligned) address.
                let p = unsafe {
                    libc::mmap(
                        ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return false;
                }
                // SAFETY: `p..p+len` is the mapping just made; mlock changes no content.
                unsafe { libc::mlock(p, len) };
                let p = p.cast::<u8>();
                if PAGE
                    .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // Another thread published its page first: ours was never shared.
                    // SAFETY: `p..p+len` is our own mapping, which nobody else has seen.
                    unsafe { libc::munmap(p.cast(), len) };
                }
                true
            }

            /// Holds [`BUSY`]; releases it when dropped.
            struct Busy;

            impl Busy {
                fn take() -> Busy {
                    let mut polls = 0;
                    while BUSY
                        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        super::super::super::wait(&mut polls);
                    }
                    Busy
                }
            }

            impl Drop for Busy {
                fn drop(&mut self) {
                    BUSY.store(false, Ordering::Release);
                }
            }

            /// Change the page's protection; `Err` when refused.
            ///
            /// # Safety
            ///
            /// `page` is [`PAGE`]'s mapping and the caller holds [`BUSY`] (nobody else
            /// touches the page or changes its protection meanwhile).
            unsafe fn protect(page: *mut u8, prot: libc::c_int) -> Result<(), Refusal> {
                // SAFETY: the page is our private mapping (caller's contract); changing its
                // protection affects no other memory.
                match unsafe { libc::mprotect(page.cast(), page_len(), prot) } {
                    0 => Ok(()),
                    _ => Err(Refusal::Mprotect),
                }
            }

            /// Write the page's first byte, so that its page-table entry is present,
            /// accessed and dirty.
            ///
            /// # Safety
            ///
            /// As for [`protect`], and the page is readable and writable now.
            unsafe fn touch(page: *mut u8) {
                // SAFETY: the page is mapped read-write and only the holder of `BUSY` uses
                // it (caller's contract). Volatile: the write must happen, between the two
                // `mprotect` calls around it.
                unsafe { page.write_volatile(page.read_volatile().wrapping_add(1)) };
            }

            /// Run a full memory barrier on every CPU that runs a thread of this process,
            /// through the TLB shootdown of `mprotect` ("When membarrier is refused" in the
            /// module documentation). Safe to call from any number of threads at once: they
            /// take turns.
            pub fn barrier() -> Result<(), Refusal> {
                if broadcast_flush() {
                    return Err(Refusal::BroadcastFlush);
                }
                if !prepare() {
                    return Err(Refusal::NoPage);
                }
                let page = PAGE.load(Ordering::Acquire);
                let _busy = Busy::take();
                // SAFETY: for the five calls, `page` is PAGE's mapping, published and never
                // unmapped, and we hold BUSY; each `touch` follows a successful `protect` to
                // read-write.
                unsafe {
                    protect(page, libc::PROT_READ | libc::PROT_WRITE)?;
                    touch(page);
                    // Present, accessed, writable -> no access: Linux must invalidate the
                    // entry on every CPU that may cache it, and waits for them.
                    protect(page, libc::PROT_NONE)?;
                    // If the kernel took the entry away between the touch and the call
                    // above (migration, reclaim), the call flushed nothing; this touch then
                    // faults and waits until that kernel path, which flushes, is done.
                    protect(page, libc::PROT_READ | libc::PROT_WRITE)?;
                    touch(page);
                }
                Ok(())
            }
        }
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
    mod imp {
        #[inline(always)]
        pub fn me() -> Option<usize> {
            None
        }

        #[inline(always)]
        pub fn thread_pointer() -> Option<usize> {
            None
        }

        pub fn barrier_all() {}
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
    fn bias_is_revoked_exclusively() {
        revoke_under_load();
    }

    /// The same with the fallback barrier instead of `membarrier` (as under a seccomp filter
    /// that forbids it), where the fallback can serve.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    #[test]
    fn bias_is_revoked_exclusively_by_the_fallback_barrier() {
        match bias::fallback::barrier() {
            Err(bias::fallback::Refusal::BroadcastFlush) => {
                eprintln!("skipped: INVLPGB, the fallback refuses (as it must)");
                return;
            }
            r => assert_eq!(r, Ok(()), "the fallback barrier serves"),
        }
        // Other tests running meanwhile then revoke with the fallback too: as correct.
        bias::SKIP_MEMBARRIER.store(true, Ordering::Relaxed);
        revoke_under_load();
        bias::SKIP_MEMBARRIER.store(false, Ordering::Relaxed);
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    #[test]
    fn fallback_barrier_serves_many_threads_at_once() {
        use bias::fallback::{barrier, Refusal};
        let first = barrier();
        if first == Err(Refusal::BroadcastFlush) {
            eprintln!("skipped: INVLPGB, the fallback refuses (as it must)");
            return;
        }
        assert_eq!(first, Ok(()));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..300 {
                        assert_eq!(barrier(), Ok(()));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    /// Many fresh locks, each revoked while its owner may be inside.
    fn revoke_under_load() {
        // Many fresh locks: the first thread takes each one as its owner (on x86-64 Linux with
        // membarrier) and keeps entering it; a second thread arrives at a varying moment and
        // revokes the bias while the owner may be inside. Each critical section does a
        // non-atomic read-modify-write of a pair with a window in the middle: two threads inside
        // at once lose an increment or tear the pair.
        let locks = if cfg!(miri) { 3 } else { 100 };
        let rounds: u64 = if cfg!(miri) { 20 } else { 40 };
        // Long enough inside (tens of microseconds, longer than a `membarrier`) that a revoker
        // that did not wait for the owner would overlap it.
        fn critical(g: &mut (u64, u64)) {
            let (a, b) = *g;
            assert_eq!(a, b, "two threads inside at once");
            g.0 = a + 1;
            for _ in 0..if cfg!(miri) { 1 } else { 5_000 } {
                std::hint::black_box(&mut *g);
                std::hint::spin_loop();
            }
            g.1 = b + 1;
        }
        for n in 0..locks {
            let lock = Arc::new(Lock::new((0u64, 0u64)));
            let go = Arc::new(std::sync::Barrier::new(2));
            let owner = {
                let (lock, go) = (Arc::clone(&lock), Arc::clone(&go));
                std::thread::spawn(move || {
                    let _ = *lock.lock(); // become the owner before the other thread starts
                    go.wait();
                    for _ in 0..rounds {
                        let mut g = lock.lock();
                        critical(&mut g);
                    }
                })
            };
            go.wait();
            for _ in 0..(n % 50) * 20 {
                std::hint::spin_loop();
            }
            for _ in 0..rounds {
                let mut g = lock.lock();
                critical(&mut g);
            }
            owner.join().unwrap();
            assert_eq!(*lock.lock(), (2 * rounds, 2 * rounds));
            if bias::me().is_some() {
                assert_eq!(lock.bias.load(Ordering::Relaxed), REVOKED);
            }
        }
    }

    #[test]
    fn one_thread_keeps_the_bias() {
        let lock = Lock::new(0u32);
        for _ in 0..1000 {
            *lock.lock() += 1;
        }
        assert_eq!(*lock.lock(), 1000);
        match bias::me() {
            // The owner never took the test-and-set lock.
            Some(me) => {
                assert_eq!(lock.bias.load(Ordering::Relaxed), me);
                assert!(!lock.locked.load(Ordering::Relaxed));
            }
            None => assert_eq!(lock.bias.load(Ordering::Relaxed), REVOKED),
        }
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
