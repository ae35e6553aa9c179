//! Locking that survives a panic: a mutex whose holder panicked still guards consistent data
//! everywhere Shallot uses one (each critical section leaves the data valid at every step), so
//! the next holder takes it as it is rather than failing forever.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data as it is if a previous holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_opens() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = lock(&m2);
            #[allow(clippy::panic)]
            {
                panic!("holder fails");
            }
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
