//! Writing a long message in the user's own editor (`Ctrl-E`, `:edit`): the draft goes into
//! a file readable by the user alone (0600) in the data directory, `$VISUAL` or `$EDITOR`
//! (else `vi`) runs on it with the terminal handed over, and what it leaves becomes the
//! draft. The file is removed afterwards, however the editor ends: a draft is a message
//! not yet sent, and stays no longer on disk than it must. Suspending and resuming the
//! full-screen terminal around it is `terminal`'s part.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The editor command to run: `$VISUAL`, else `$EDITOR`, else `vi`. It may carry
/// arguments (`code --wait`); the file's path is added at the end.
pub fn editor_command() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

/// Removes the draft's file when dropped.
struct DraftFile(PathBuf);

impl Drop for DraftFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `text` into a new 0600 file in `dir`, runs `editor` on it (through `sh`, so that
/// it may carry arguments) with this process's terminal, and returns what the file holds
/// afterwards, less the one newline editors add at the end. The file is removed on every
/// way out. An editor that fails (exits with an error) gives an error, and the caller keeps
/// the draft it had.
pub fn edit_text(dir: &Path, text: &str, editor: &str) -> io::Result<String> {
    let name = format!(
        ".shallot-draft-{}-{:016x}.txt",
        std::process::id(),
        rand::random::<u64>()
    );
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let draft = DraftFile(path);
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("shallot-editor")
        .arg(&draft.0)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "{editor} exited with {}",
            status
                .code()
                .map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"))
        )));
    }
    let mut edited = std::fs::read_to_string(&draft.0)?;
    if edited.ends_with('\n') {
        edited.pop();
    }
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shallot-tui-editor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn script(dir: &Path, body: &str) -> String {
        let path = dir.join("editor.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        format!("sh {}", path.display())
    }

    /// The editor sees the draft in a private file, writes known text, and the text comes
    /// back; the file is gone afterwards.
    #[test]
    fn the_editor_s_text_becomes_the_draft() {
        let dir = scratch("ok");
        let seen = dir.join("seen");
        let editor = script(
            &dir,
            &format!(
                "stat -c %a \"$1\" > {seen}\ncat \"$1\" >> {seen}\necho >> {seen}\necho \"$1\" >> {seen}\n\
                 printf 'line one\\nline two\\n' > \"$1\"",
                seen = seen.display()
            ),
        );
        let out = edit_text(&dir, "the draft", &editor).unwrap();
        assert_eq!(out, "line one\nline two");
        let seen = std::fs::read_to_string(&seen).unwrap();
        let mut lines = seen.lines();
        assert_eq!(lines.next(), Some("600"));
        assert_eq!(lines.next(), Some("the draft"));
        let file = PathBuf::from(lines.next().unwrap());
        assert!(file.starts_with(&dir));
        assert!(!file.exists(), "the draft's file was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An editor that fails gives an error, and its file is removed too.
    #[test]
    fn a_failing_editor_is_an_error_and_leaves_nothing() {
        let dir = scratch("fail");
        let editor = script(&dir, "echo changed > \"$1\"; exit 3");
        let err = edit_text(&dir, "kept", &editor).unwrap_err();
        assert!(err.to_string().contains("status 3"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("draft"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
