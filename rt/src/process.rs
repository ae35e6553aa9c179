//! What the system says of other processes, where `/proc` shows them: whether one with a given
//! id has ended. For removing what a process left behind only once it is gone.

use std::path::Path;

/// Whether no process with id `pid` runs here: `Some(true)` only when `/proc` says so plainly,
/// `Some(false)` when one does or `/proc` cannot tell (an error counts as running), `None`
/// where there is no `/proc` to ask.
pub fn has_ended(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(matches!(proc.join(pid.to_string()).try_exists(), Ok(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_an_impossible_id_has_ended() {
        if Path::new("/proc/self").exists() {
            assert_eq!(has_ended(std::process::id()), Some(false));
            // Linux caps process ids at 2^22.
            assert_eq!(has_ended(u32::MAX - 1), Some(true));
        } else {
            assert_eq!(has_ended(1), None);
        }
    }
}
