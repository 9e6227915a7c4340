//! An engine stage's lock: a mutex that a waiting request spins for briefly before it sleeps,
//! and that counts how long requests waited for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// A stage's state behind its mutex, whether a request already spins for it, and how long
/// requests waited for it.
pub(super) struct Stage<T> {
    state: Mutex<T>,
    /// One waiter at a time spins; the others sleep at once: only one can take the stage
    /// next, and a spinner's CPU is taken from the requests still being read.
    spinning: AtomicBool,
    /// How long a waiter spins before it sleeps ([`spin_before_sleep`]).
    spin: Duration,
    /// How long requests waited for the stage, in nanoseconds of real time (not the engine's
    /// clock): what a second core loses to the lock.
    waited_nanos: AtomicU64,
}

/// How long a request spins for a stage another request holds before it sleeps. A request's
/// stage takes some 100–300 µs (500 spans), and waking a sleeping thread can take tens of
/// microseconds on a virtual machine, whose idle vCPU halts: in `make bench-intake` on this
/// 2-vCPU machine, sleeping at once gave 1.3–1.7× from a second thread, spinning first
/// 1.8–1.96×. Bounded, so a holder that is not running (more threads than cores) costs the
/// spinner at most this much CPU before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);

/// [`SPIN_BEFORE_SLEEP`], or no spin at all with fewer than two CPUs to run on (a container's
/// CPU quota counts: `available_parallelism` reads the cgroup's), where the holder could run
/// only once the spinner stopped.
fn spin_before_sleep() -> Duration {
    static SPIN: LazyLock<Duration> =
        LazyLock::new(|| match std::thread::available_parallelism() {
            Ok(cpus) if cpus.get() >= 2 => SPIN_BEFORE_SLEEP,
            _ => Duration::ZERO,
        });
    *SPIN
}

impl<T> Stage<T> {
    pub(super) fn new(state: T) -> Self {
        Self::with_spin(state, spin_before_sleep())
    }

    fn with_spin(state: T, spin: Duration) -> Self {
        Self {
            state: Mutex::new(state),
            spinning: AtomicBool::new(false),
            spin,
            waited_nanos: AtomicU64::new(0),
        }
    }

    /// The stage if it is free. A panic in a stage leaves its state as consistent as between
    /// two spans (nothing is half-written across spans), so a poisoned lock is taken as it is.
    pub(super) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.state.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The stage: at once if it is free; else after spinning for up to `spin` (unless another
    /// request already spins for it), then asleep. The wait is counted.
    pub(super) fn lock(&self) -> MutexGuard<'_, T> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        let started = Instant::now();
        let mut spun = None;
        if !self.spin.is_zero()
            && self
                .spinning
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            spun = self.spin(started);
            self.spinning.store(false, Ordering::Release);
        }
        let guard = spun.unwrap_or_else(|| self.state.lock().unwrap_or_else(|e| e.into_inner()));
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(waited, Ordering::Relaxed);
        guard
    }

    /// How long requests waited for the stage.
    pub(super) fn waited(&mut self) -> Duration {
        Duration::from_nanos(*self.waited_nanos.get_mut())
    }

    /// Tries the stage between ever longer pauses (up to a few microseconds, so the holder's
    /// release is not slowed by a stream of attempts) until `spin` is over.
    fn spin(&self, started: Instant) -> Option<MutexGuard<'_, T>> {
        let mut pauses = 4;
        loop {
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
            pauses = (pauses * 2).min(64);
            if let Some(guard) = self.try_lock() {
                return Some(guard);
            }
            if started.elapsed() >= self.spin {
                return None;
            }
        }
    }

    /// The state, taken whole (nothing can be waiting).
    pub(super) fn get_mut(&mut self) -> &mut T {
        self.state.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time the calling thread has used, user and system (`/proc`, in 10 ms ticks).
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // After the command's closing parenthesis: the state (field 3) first, then on to
        // utime and stime (fields 14 and 15).
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    #[test]
    fn one_request_spins_for_a_held_stage_and_another_sleeps() {
        let stage = Stage::with_spin((), Duration::from_secs(10));
        let held = Duration::from_millis(500);
        let wait = || {
            let (before, started) = (thread_cpu(), Instant::now());
            let _stage = stage.lock();
            (thread_cpu() - before, started.elapsed())
        };
        let (spinner, sleeper) = std::thread::scope(|scope| {
            let holder = stage.state.lock().unwrap();
            let spinner = scope.spawn(wait);
            while !stage.spinning.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            let sleeper = scope.spawn(wait);
            std::thread::sleep(held);
            drop(holder);
            (spinner.join().unwrap(), sleeper.join().unwrap())
        });
        // Both got the stage once it was free, long before the spin's bound.
        for (_, waited) in [spinner, sleeper] {
            assert!(
                waited >= held / 2 && waited < Duration::from_secs(5),
                "{waited:?}"
            );
        }
        // The first waiter spun the whole time (so this test tells spinning from sleeping);
        // the second, finding it spinning, slept.
        assert!(
            spinner.0 >= held / 5,
            "the spinner used {:?} of CPU",
            spinner.0
        );
        assert!(
            sleeper.0 < held / 5,
            "the sleeper used {:?} of CPU",
            sleeper.0
        );
        assert!(!stage.spinning.load(Ordering::Relaxed));
    }
}
