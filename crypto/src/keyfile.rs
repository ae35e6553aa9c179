//! Secret key files and the private directories that hold them (`docs/spec.md` §8.1).
//!
//! A key file is two lines of text: a label naming what the key is, then the 32 secret bytes in
//! hex. Files are created with mode 0600 inside directories created with mode 0700, and a key
//! file that other users could read is refused rather than used.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use zeroize::Zeroizing;

use crate::hex;

/// Something went wrong reading or writing a key file or a private directory.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The operating system refused a file operation.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file or directory can be read by users other than its owner.
    #[error("{path} is accessible by other users (mode {mode:04o}); run `chmod {fix} {path}`")]
    TooOpen {
        /// The file or directory concerned.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        fix: &'static str,
    },
    /// The file is not a key file of the expected kind.
    #[error("{path} is not a valid {label} key file: {reason}")]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// The kind of key expected.
        label: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file was expected but is missing.
    #[error("{path} does not exist; run the matching `init` command first")]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist, and refuses an
/// existing directory that other users can access.
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    check_private_dir(dir)
}

/// Refuses a directory that users other than its owner can access.
pub fn check_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    let mode = fs::metadata(dir).map_err(io_err(dir))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: dir.to_path_buf(),
            mode,
            fix: "700",
        });
    }
    Ok(())
}

/// Writes a secret to `path` with mode 0600, replacing any previous file atomically.
pub fn write_secret(path: &Path, label: &'static str, secret: &[u8]) -> Result<(), KeyFileError> {
    let mut text = Zeroizing::new(format!("shallot-{label}-v1\n"));
    text.push_str(&hex::encode(secret));
    text.push('\n');
    write_private_file(path, text.as_bytes())
}

/// Writes `contents` to `path` with mode 0600 through a temporary file and a rename, so that a
/// crash leaves either the old file or the new one.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    write_through_rename(path, contents, true)
}

/// Like [`write_private_file`], but without waiting for the disk: readers never see a partial
/// file, but a crash may leave the old file, or an empty or partial one. For caches, whose
/// reader checks what it loads and can fetch it again: a client's consensus, replaced every
/// voting interval, need not cost a disk flush each time.
pub fn replace_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    write_through_rename(path, contents, false)
}

fn write_through_rename(path: &Path, contents: &[u8], sync: bool) -> Result<(), KeyFileError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    if sync {
        file.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// Refuses a file that users other than its owner can access (or that is missing).
pub fn check_private_file(path: &Path) -> Result<(), KeyFileError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
            fix: "600",
        });
    }
    Ok(())
}

/// Reads a file that must be readable by its owner only.
pub fn read_private_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    check_private_file(path)?;
    Ok(Zeroizing::new(fs::read(path).map_err(io_err(path))?))
}

/// Reads a 32-byte secret written by [`write_secret`] with the same label.
pub fn read_secret(path: &Path, label: &'static str) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
    let raw = read_private_file(path)?;
    let malformed = |reason: &str| KeyFileError::Malformed {
        path: path.to_path_buf(),
        label,
        reason: reason.to_string(),
    };
    let text = std::str::from_utf8(&raw).map_err(|_| malformed("not text"))?;
    let mut lines = text.split('\n');
    let header = format!("shallot-{label}-v1");
    if lines.next() != Some(header.as_str()) {
        return Err(malformed(&format!("first line is not `{header}`")));
    }
    let body = lines.next().ok_or_else(|| malformed("no key line"))?;
    if lines.next() != Some("") || lines.next().is_some() {
        return Err(malformed("unexpected text after the key"));
    }
    let bytes = Zeroizing::new(hex::decode(body).map_err(|e| malformed(&e.to_string()))?);
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(malformed("the key is not 32 bytes"));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = shallot_rt::scratch::path(name);
        ensure_private_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_private_files_in_private_dirs() {
        let dir = scratch("perms").join("nested");
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let path = dir.join("k");
        write_secret(&path, "test", &[7u8; 32]).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(*read_secret(&path, "test").unwrap(), [7u8; 32]);
    }

    #[test]
    fn refuses_a_file_readable_by_others() {
        let dir = scratch("open");
        let path = dir.join("k");
        write_secret(&path, "test", &[1u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path, "test").unwrap_err();
        assert!(
            matches!(err, KeyFileError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn refuses_an_open_directory() {
        let dir = scratch("opendir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            ensure_private_dir(&dir),
            Err(KeyFileError::TooOpen { .. })
        ));
    }

    #[test]
    fn refuses_wrong_label_and_garbage() {
        let dir = scratch("label");
        let path = dir.join("k");
        write_secret(&path, "alpha", &[1u8; 32]).unwrap();
        assert!(matches!(
            read_secret(&path, "beta"),
            Err(KeyFileError::Malformed { .. })
        ));
        write_private_file(&path, b"shallot-alpha-v1\nzz\n").unwrap();
        assert!(matches!(
            read_secret(&path, "alpha"),
            Err(KeyFileError::Malformed { .. })
        ));
        write_private_file(&path, b"shallot-alpha-v1\n0011\n").unwrap();
        assert!(matches!(
            read_secret(&path, "alpha"),
            Err(KeyFileError::Malformed { .. })
        ));
        assert!(matches!(
            read_secret(&dir.join("absent"), "alpha"),
            Err(KeyFileError::Missing { .. })
        ));
    }
}
