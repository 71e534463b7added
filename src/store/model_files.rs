//! Versioned model files on disk: atomic writes, an `ACTIVE` pointer, pruning and quarantine.
//!
//! Layout of `<data_dir>/models`:
//!
//! - `model-<version:010>.bin`: one model per version, as the detector encoded it (the store
//!   never looks inside; the detector's own format version and checksum catch corruption);
//! - `ACTIVE`: the active version as decimal text;
//! - `model-<version:010>.bin.corrupt`: files the detector rejected, kept for inspection;
//! - `.<name>.<random>.tmp`: writes in flight. Every file is written to such a temp file,
//!   fsynced, renamed over its final name and the directory fsynced, so a crash leaves either
//!   the old file or the new one, never a torn one. Leftover temps are removed at open.
//!
//! One process owns the directory: open removes every temp file it finds, which would break a
//! second process writing at the same moment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::StoreError;

const MODELS_DIR: &str = "models";
const ACTIVE_FILE: &str = "ACTIVE";
const MODEL_PREFIX: &str = "model-";
const MODEL_SUFFIX: &str = ".bin";
const CORRUPT_SUFFIX: &str = ".corrupt";
const TEMP_SUFFIX: &str = ".tmp";
/// How much of a garbled ACTIVE file an error message quotes.
const ACTIVE_QUOTE_LIMIT: usize = 64;

/// The model directory: one file per version, an active pointer, and how many versions to keep.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    dir: PathBuf,
    keep: usize,
}

impl ModelFiles {
    /// Opens (creating) `<data_dir>/models`, checks that it is writable by writing and removing
    /// a probe file, and removes temp files left by a crash.
    ///
    /// `keep` is how many of the newest versions [`prune`](Self::prune) keeps besides the active
    /// one; it is at least 1, because keeping none would delete a model right after saving it,
    /// before it could be activated.
    pub fn open(data_dir: &Path, keep: usize) -> Result<Self, StoreError> {
        let dir = data_dir.join(MODELS_DIR);
        fs::create_dir_all(&dir).map_err(|source| StoreError::DirNotWritable {
            path: dir.clone(),
            source,
        })?;
        let files = Self {
            dir,
            keep: keep.max(1),
        };
        files.probe_writable()?;
        files.remove_temp_files()?;
        Ok(files)
    }

    /// The directory holding the model files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many of the newest versions pruning keeps (besides the active one).
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Where version `version` lives (whether or not it exists).
    pub fn path_of(&self, version: u64) -> PathBuf {
        self.dir.join(model_file_name(version))
    }

    /// Writes `bytes` as `model-<version:010>.bin` atomically and durably, then prunes old
    /// versions.
    ///
    /// Refuses a version that exists or was quarantined: a version number names one model
    /// forever, so logs and rollbacks never mean two different things. A failed prune is logged,
    /// not returned, because the model itself is safely on disk by then.
    pub fn save(&self, version: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path_of(version);
        let corrupt = corrupt_path(&path);
        if exists(&path)? || exists(&corrupt)? {
            return Err(StoreError::VersionExists(version));
        }
        self.write_atomically(&model_file_name(version), bytes)?;
        tracing::info!(version, path = %path.display(), size = bytes.len(), "saved model file");
        match self.prune() {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, keep = self.keep, "pruned old model files");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not prune old model files"),
        }
        Ok(())
    }

    /// Points `ACTIVE` at `version`, atomically. The version's file must exist.
    pub fn set_active(&self, version: u64) -> Result<(), StoreError> {
        let path = self.path_of(version);
        if !exists(&path)? {
            return Err(StoreError::ModelNotFound(version));
        }
        self.write_atomically(ACTIVE_FILE, format!("{version}\n").as_bytes())
    }

    /// The version `ACTIVE` points at; `None` when there is no pointer yet.
    ///
    /// A garbled pointer is [`StoreError::ActiveCorrupt`]: the caller can log it and fall back
    /// to the newest version. The pointed-at file may be gone (pruned by hand, quarantined);
    /// [`read`](Self::read) then says [`StoreError::ModelNotFound`].
    pub fn active(&self) -> Result<Option<u64>, StoreError> {
        let path = self.dir.join(ACTIVE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            Some(version) => Ok(Some(version)),
            None => {
                let content: String = String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(ACTIVE_QUOTE_LIMIT)
                    .collect();
                Err(StoreError::ActiveCorrupt { path, content })
            }
        }
    }

    /// Versions with a model file, ascending. Temp, quarantined and foreign files are ignored.
    pub fn versions(&self) -> Result<Vec<u64>, StoreError> {
        let mut versions: Vec<u64> = self
            .file_names()?
            .iter()
            .filter_map(|name| parse_model_file_name(name))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Versions whose file was quarantined, ascending.
    pub fn quarantined_versions(&self) -> Result<Vec<u64>, StoreError> {
        let mut versions: Vec<u64> = self
            .file_names()?
            .iter()
            .filter_map(|name| name.strip_suffix(CORRUPT_SUFFIX))
            .filter_map(parse_model_file_name)
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Reads the bytes of version `version`.
    pub fn read(&self, version: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(version);
        fs::read(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::ModelNotFound(version)
            } else {
                StoreError::Io {
                    op: "read",
                    path,
                    source,
                }
            }
        })
    }

    /// The version number for the next save: one more than any version kept, quarantined or
    /// pointed at, so a number is never reused (starts at 1).
    pub fn next_version(&self) -> Result<u64, StoreError> {
        let names = self.file_names()?;
        let on_disk = names.iter().filter_map(|name| {
            parse_model_file_name(name.strip_suffix(CORRUPT_SUFFIX).unwrap_or(name))
        });
        // A garbled pointer says nothing about numbers in use, so it does not block a save.
        let active = self.active().ok().flatten();
        match on_disk.chain(active).max() {
            None => Ok(1),
            Some(max) => max.checked_add(1).ok_or(StoreError::VersionOverflow),
        }
    }

    /// Renames version `version` aside to `model-<version:010>.bin.corrupt`, where it is kept for
    /// inspection and never listed or loaded again. `ACTIVE` is left alone: the caller decides
    /// which version to activate instead.
    pub fn quarantine(&self, version: u64) -> Result<(), StoreError> {
        let path = self.path_of(version);
        let target = corrupt_path(&path);
        match fs::rename(&path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::ModelNotFound(version));
            }
            Err(source) => {
                return Err(StoreError::Io {
                    op: "quarantine",
                    path,
                    source,
                });
            }
        }
        self.sync_dir()?;
        tracing::warn!(version, path = %target.display(), "quarantined model file");
        Ok(())
    }

    /// Deletes the oldest versions beyond the `keep` newest, never the active one, and returns
    /// the deleted versions. With a garbled `ACTIVE` nothing is deleted, since the active
    /// version is unknown.
    pub fn prune(&self) -> Result<Vec<u64>, StoreError> {
        let active = self.active()?;
        let versions = self.versions()?;
        let excess = versions.len().saturating_sub(self.keep);
        let mut removed = Vec::new();
        for &version in versions[..excess].iter() {
            if Some(version) == active {
                continue;
            }
            let path = self.path_of(version);
            match fs::remove_file(&path) {
                Ok(()) => removed.push(version),
                // Someone else removed it first: the goal is met.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "remove",
                        path,
                        source,
                    });
                }
            }
        }
        if !removed.is_empty() {
            self.sync_dir()?;
        }
        Ok(removed)
    }

    /// Removes temp files left by an interrupted write and returns how many; [`open`](Self::open)
    /// calls it. A temp file is never a complete, named model, so nothing of value is lost.
    pub fn remove_temp_files(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for name in self.file_names()? {
            if !is_temp_file_name(&name) {
                continue;
            }
            let path = self.dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed leftover temp file");
                    removed += 1;
                }
                // Leftovers are ignored by every listing, so failing to remove one is harmless.
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove leftover temp file");
                }
            }
        }
        Ok(removed)
    }

    /// Writes `bytes` under `final_name` via a uniquely named temp file, fsync, rename and a
    /// directory fsync. Unique temp names keep concurrent writers of different files apart.
    fn write_atomically(&self, final_name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let temp = self.dir.join(format!(
            ".{final_name}.{}{TEMP_SUFFIX}",
            Uuid::new_v4().simple()
        ));
        let target = self.dir.join(final_name);
        let result = write_and_sync(&temp, bytes).and_then(|()| {
            fs::rename(&temp, &target).map_err(|source| StoreError::Io {
                op: "rename into place",
                path: target.clone(),
                source,
            })
        });
        if let Err(error) = result {
            // Best effort: a leftover would be removed at the next open anyway.
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        // The rename is only durable once the directory entry is on disk.
        self.sync_dir()
    }

    fn probe_writable(&self) -> Result<(), StoreError> {
        let probe = self
            .dir
            .join(format!(".probe.{}{TEMP_SUFFIX}", Uuid::new_v4().simple()));
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"probe"))
            .and_then(|()| fs::remove_file(&probe));
        result.map_err(|source| {
            let _ = fs::remove_file(&probe);
            StoreError::DirNotWritable {
                path: self.dir.clone(),
                source,
            }
        })
    }

    /// Names of the plain files in the directory; names that are not UTF-8 are not ours.
    fn file_names(&self) -> Result<Vec<String>, StoreError> {
        let io_err = |source| StoreError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if !entry.file_type().map_err(io_err)?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    #[cfg(unix)]
    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Io {
                op: "fsync directory",
                path: self.dir.clone(),
                source,
            })
    }

    /// Directories cannot be opened for fsync on Windows; NTFS journals renames itself.
    #[cfg(not(unix))]
    fn sync_dir(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn write_and_sync(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io_err = |op| {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    // create_new: a temp name is random, so an existing file means something is badly wrong.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create"))?;
    file.write_all(bytes).map_err(io_err("write"))?;
    file.sync_all().map_err(io_err("fsync"))
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    path.try_exists().map_err(|source| StoreError::Io {
        op: "check",
        path: path.to_path_buf(),
        source,
    })
}

fn model_file_name(version: u64) -> String {
    format!("{MODEL_PREFIX}{version:010}{MODEL_SUFFIX}")
}

fn corrupt_path(model_path: &Path) -> PathBuf {
    let mut name = model_path.as_os_str().to_owned();
    name.push(CORRUPT_SUFFIX);
    PathBuf::from(name)
}

/// The version of a well-named model file: exactly what [`model_file_name`] writes, so stray
/// files such as `model-1.bin` or `model-x.bin` are never taken for models.
fn parse_model_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(MODEL_PREFIX)?
        .strip_suffix(MODEL_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version: u64 = digits.parse().ok()?;
    (model_file_name(version) == name).then_some(version)
}

fn is_temp_file_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, keep: usize) -> ModelFiles {
        ModelFiles::open(dir, keep).expect("open model dir")
    }

    /// A model directory in a new temporary folder, removed when the folder is dropped.
    fn fresh(keep: usize) -> (tempfile::TempDir, ModelFiles) {
        let tmp = tempfile::tempdir().unwrap();
        let files = open(tmp.path(), keep);
        (tmp, files)
    }

    /// A fresh model directory holding `version`, made the active one.
    fn with_active(keep: usize, version: u64) -> (tempfile::TempDir, ModelFiles) {
        let (tmp, files) = fresh(keep);
        files
            .save(version, format!("v{version}").as_bytes())
            .unwrap();
        files.set_active(version).unwrap();
        (tmp, files)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn save_then_read_returns_the_same_bytes_under_the_padded_name() {
        let (_tmp, files) = fresh(5);
        let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        files.save(7, &bytes).unwrap();
        assert_eq!(files.read(7).unwrap(), bytes);
        assert_eq!(names_in(files.dir()), vec!["model-0000000007.bin"]);
        assert!(matches!(files.read(8), Err(StoreError::ModelNotFound(8))));
    }

    #[test]
    fn saving_an_existing_or_quarantined_version_is_refused() {
        let (_tmp, files) = fresh(5);
        files.save(1, b"first").unwrap();
        assert!(matches!(
            files.save(1, b"second"),
            Err(StoreError::VersionExists(1))
        ));
        assert_eq!(files.read(1).unwrap(), b"first");
        files.quarantine(1).unwrap();
        assert!(matches!(
            files.save(1, b"third"),
            Err(StoreError::VersionExists(1))
        ));
    }

    #[test]
    fn leftover_and_truncated_temp_files_are_ignored_and_removed_at_open() {
        let (tmp, files) = fresh(5);
        files.save(1, b"good model").unwrap();
        // What a crash mid-save leaves: a complete temp never renamed, and a truncated one.
        fs::write(
            files.dir().join(".model-0000000002.bin.0123abcd.tmp"),
            b"complete but never renamed",
        )
        .unwrap();
        fs::write(
            files.dir().join(".model-0000000003.bin.4567ef.tmp"),
            b"trun",
        )
        .unwrap();
        fs::write(files.dir().join(".ACTIVE.89ab.tmp"), b"").unwrap();
        assert_eq!(files.versions().unwrap(), vec![1]);

        let reopened = open(tmp.path(), 5);
        assert_eq!(names_in(reopened.dir()), vec!["model-0000000001.bin"]);
        assert_eq!(reopened.versions().unwrap(), vec![1]);
        assert_eq!(reopened.read(1).unwrap(), b"good model");
    }

    #[test]
    fn versions_are_ascending_and_only_well_named_files_count() {
        let (_tmp, files) = fresh(100);
        for v in [10, 2, 33, 1, 9_999_999_999] {
            files.save(v, b"m").unwrap();
        }
        for stray in [
            "model-1.bin",
            "model-x.bin",
            "model-0000000004.bin.bak",
            "notes.txt",
        ] {
            fs::write(files.dir().join(stray), b"?").unwrap();
        }
        fs::create_dir(files.dir().join("model-0000000005.bin")).unwrap();
        assert_eq!(files.versions().unwrap(), vec![1, 2, 10, 33, 9_999_999_999]);
        assert_eq!(files.next_version().unwrap(), 10_000_000_000);
    }

    #[test]
    fn prune_keeps_the_newest_n_and_the_active_one() {
        let (_tmp, files) = with_active(2, 1);
        for v in 2..=5 {
            files.save(v, b"v").unwrap();
        }
        // save prunes: 1 is active, 4 and 5 are the newest two.
        assert_eq!(files.versions().unwrap(), vec![1, 4, 5]);
        files.set_active(5).unwrap();
        assert_eq!(files.prune().unwrap(), vec![1]);
        assert_eq!(files.versions().unwrap(), vec![4, 5]);
        assert_eq!(files.prune().unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn keep_zero_still_keeps_the_model_just_saved() {
        let (_tmp, files) = fresh(0);
        assert_eq!(files.keep(), 1);
        files.save(1, b"v1").unwrap();
        assert_eq!(files.versions().unwrap(), vec![1]);
    }

    #[test]
    fn prune_deletes_nothing_while_the_active_pointer_is_garbled() {
        let (_tmp, files) = with_active(1, 1);
        fs::write(files.dir().join(ACTIVE_FILE), b"garbage").unwrap();
        // The save itself succeeds; only its prune step gives up.
        files.save(2, b"v2").unwrap();
        files.save(3, b"v3").unwrap();
        assert_eq!(files.versions().unwrap(), vec![1, 2, 3]);
        assert!(matches!(
            files.prune(),
            Err(StoreError::ActiveCorrupt { .. })
        ));
    }

    #[test]
    fn active_pointer_round_trips_and_requires_an_existing_version() {
        let (tmp, files) = fresh(5);
        assert_eq!(files.active().unwrap(), None);
        assert!(matches!(
            files.set_active(3),
            Err(StoreError::ModelNotFound(3))
        ));
        assert_eq!(files.active().unwrap(), None);
        files.save(3, b"m3").unwrap();
        files.save(4, b"m4").unwrap();
        files.set_active(3).unwrap();
        assert_eq!(files.active().unwrap(), Some(3));
        files.set_active(4).unwrap();
        assert_eq!(open(tmp.path(), 5).active().unwrap(), Some(4));
        assert_eq!(
            fs::read_to_string(files.dir().join(ACTIVE_FILE)).unwrap(),
            "4\n"
        );
    }

    #[test]
    fn a_garbled_active_pointer_is_a_typed_error_quoting_the_content() {
        let (_tmp, files) = fresh(5);
        for garbage in [
            &b"seven"[..],
            b"",
            b"-1",
            b"\xff\xfe",
            b"18446744073709551616",
        ] {
            fs::write(files.dir().join(ACTIVE_FILE), garbage).unwrap();
            match files.active() {
                Err(e @ StoreError::ActiveCorrupt { .. }) => {
                    assert!(e.to_string().contains("ACTIVE"), "{e}");
                }
                other => panic!("expected ActiveCorrupt for {garbage:?}, got {other:?}"),
            }
        }
        fs::write(files.dir().join(ACTIVE_FILE), " 12 \n").unwrap();
        assert_eq!(files.active().unwrap(), Some(12));
    }

    #[test]
    fn quarantined_versions_are_hidden_and_their_numbers_never_reused() {
        let (tmp, files) = fresh(5);
        assert_eq!(files.next_version().unwrap(), 1);
        files.save(1, b"m1").unwrap();
        files.save(2, b"bad").unwrap();
        files.quarantine(2).unwrap();
        assert_eq!(files.versions().unwrap(), vec![1]);
        assert_eq!(files.quarantined_versions().unwrap(), vec![2]);
        assert!(files.dir().join("model-0000000002.bin.corrupt").is_file());
        assert!(matches!(files.read(2), Err(StoreError::ModelNotFound(2))));
        assert_eq!(files.next_version().unwrap(), 3);
        assert!(matches!(
            files.quarantine(9),
            Err(StoreError::ModelNotFound(9))
        ));
        // Quarantined files are kept for inspection: pruning and reopening leave them alone.
        let reopened = open(tmp.path(), 1);
        reopened.prune().unwrap();
        assert_eq!(reopened.quarantined_versions().unwrap(), vec![2]);
    }

    #[test]
    fn next_version_accounts_for_the_active_pointer() {
        let (_tmp, files) = with_active(5, 4);
        fs::remove_file(files.path_of(4)).unwrap();
        assert_eq!(files.next_version().unwrap(), 5);
    }

    #[test]
    fn open_under_a_regular_file_is_a_clear_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("not-a-dir");
        fs::write(&blocker, b"x").unwrap();
        for data_dir in [blocker.clone(), blocker.join("data")] {
            match ModelFiles::open(&data_dir, 5) {
                Err(e @ StoreError::DirNotWritable { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("not-a-dir"), "{msg}");
                    assert!(msg.contains("not writable"), "{msg}");
                }
                other => panic!("expected DirNotWritable, got {other:?}"),
            }
        }
    }

    #[test]
    fn concurrent_saves_of_different_versions_all_land() {
        let (_tmp, files) = fresh(100);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let files = &files;
                s.spawn(move || {
                    for i in 0..10u64 {
                        let v = 1 + t * 10 + i;
                        files.save(v, &v.to_le_bytes()).unwrap();
                        files.set_active(v).unwrap();
                    }
                });
            }
        });
        assert_eq!(files.versions().unwrap(), (1..=40).collect::<Vec<_>>());
        for v in 1..=40u64 {
            assert_eq!(files.read(v).unwrap(), v.to_le_bytes());
        }
        assert!(files.active().unwrap().is_some());
        assert!(names_in(files.dir()).iter().all(|n| !is_temp_file_name(n)));
    }

    #[test]
    fn model_file_names_parse_only_in_canonical_form() {
        assert_eq!(parse_model_file_name("model-0000000042.bin"), Some(42));
        assert_eq!(
            parse_model_file_name(&model_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "model-42.bin",
            "model-00000000042.bin",
            "model-+000000042.bin",
            "model-.bin",
            "model-0000000042.bin.corrupt",
        ] {
            assert_eq!(parse_model_file_name(bad), None, "{bad}");
        }
    }
}
