//! Background threads (`docs/spec.md` §9.4): a thread whose work is not on anyone's path
//! right now (a store's commits on their way to the disk) gives way to the threads forwarding
//! cells, so that on a busy machine a cell is not kept waiting behind a flush.
//!
//! On Linux the scheduling priority (the "nice" value) is a property of each thread, and a
//! thread may always lower its own; elsewhere it is the whole process's, so this does nothing
//! there rather than slow every thread of the process.

/// The nice value a background thread takes: from 0, a tenth of a busy core's share.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`BACKGROUND_NICE`] (never raises it:
/// a thread already nicer stays so). Returns whether the thread now runs at that priority
/// or lower; `false` where priorities are per process, or if the system refused (logged).
/// Threads it spawns afterwards inherit the priority.
pub fn make_this_thread_background() -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        match getpriority_process(me) {
            Ok(now) if now >= BACKGROUND_NICE => true,
            Ok(_) => match setpriority_process(me, BACKGROUND_NICE) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("cannot lower this thread's priority: {e}");
                    false
                }
            },
            Err(e) => {
                tracing::debug!("cannot read this thread's priority: {e}");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The calling thread's nice value, where priorities are per thread (tests and diagnostics).
pub fn this_thread_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_is_nicer_and_its_siblings_are_not() {
        let before = this_thread_nice().unwrap();
        if before >= BACKGROUND_NICE {
            // Inherited already: nothing here could tell the call's effect apart.
            eprintln!("skipped: the tests already run at nice {before}");
            return;
        }
        let (lowered, inside) = std::thread::spawn(|| {
            let lowered = make_this_thread_background();
            (lowered, this_thread_nice())
        })
        .join()
        .unwrap();
        assert!(lowered);
        assert!(inside.unwrap() >= BACKGROUND_NICE);
        assert_eq!(
            this_thread_nice().unwrap(),
            before,
            "the calling thread, and so the process, keeps its priority"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_already_nicer_is_left_as_it_is() {
        let nice = std::thread::spawn(|| {
            assert!(make_this_thread_background());
            let further = BACKGROUND_NICE + 5;
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), further).unwrap();
            assert!(make_this_thread_background());
            this_thread_nice()
        })
        .join()
        .unwrap();
        assert_eq!(nice, Some(BACKGROUND_NICE + 5));
    }
}
