//! The file system raft-engine writes a replica's log through: raft-engine's
//! own, watched. A failed sync is remembered with the file it was for, so
//! the replica can say what failed, once; and for fault tests
//! (`[[disk_faults]]`) syncs can be made to fail.
//!
//! raft-engine panics when a sync fails (retrying a failed fsync may
//! report success for pages the kernel already dropped), and the replica's
//! writer catches that panic and closes the log. The panic's own report
//! would say "panicked" at a line of raft-engine's source; the writer
//! reports the failure instead, so the panic hook is told to stay quiet
//! for that one panic on that thread.

use std::cell::RefCell;
use std::io::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use raft_engine::env::{DefaultFileSystem, FileSystem, Handle, Permission};

type InnerHandle = <DefaultFileSystem as FileSystem>::Handle;

/// The errno a dying disk's failed writeback reports.
const EIO: i32 = 5;

thread_local! {
    /// The error of a sync that failed on this thread (its `Debug` form,
    /// which raft-engine's `unwrap` prints), for the panic it raises next.
    static SYNC_FAILED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What the syncs of one log have done; shared by its handles.
#[derive(Debug, Default)]
pub struct SyncWatch {
    syncs: AtomicU64,
    /// Syncs after this many fail (fault tests only).
    fail_after: Option<u64>,
    /// The first failure: the file and the error.
    failure: Mutex<Option<String>>,
}

impl SyncWatch {
    /// A watch whose syncs after the first `fail_after` fail with EIO.
    pub fn failing_after(fail_after: Option<u64>) -> SyncWatch {
        SyncWatch {
            fail_after,
            ..SyncWatch::default()
        }
    }

    /// The first sync that failed, as "fsync of FILE failed: ERROR".
    pub fn failure(&self) -> Option<String> {
        self.lock_failure().clone()
    }

    fn lock_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sync(&self, path: &Path, handle: &InnerHandle) -> Result<()> {
        let done = self.syncs.fetch_add(1, Ordering::Relaxed);
        let result = match self.fail_after {
            Some(fail_after) if done >= fail_after => Err(Error::from_raw_os_error(EIO)),
            _ => handle.sync(),
        };
        if let Err(error) = &result {
            let mut failure = self.lock_failure();
            if failure.is_none() {
                *failure = Some(format!("fsync of {} failed: {error}", path.display()));
            }
            quiet_next_panic(error);
        }
        result
    }
}

/// raft-engine's default file system with its syncs watched.
pub struct WatchedFileSystem {
    inner: DefaultFileSystem,
    watch: Arc<SyncWatch>,
}

impl WatchedFileSystem {
    pub fn new(watch: Arc<SyncWatch>) -> WatchedFileSystem {
        install_panic_hook();
        WatchedFileSystem {
            inner: DefaultFileSystem,
            watch,
        }
    }

    fn watched(&self, path: &Path, inner: InnerHandle) -> WatchedHandle {
        WatchedHandle {
            inner: Arc::new(inner),
            path: path.to_path_buf(),
            watch: self.watch.clone(),
        }
    }
}

/// One open file of the log.
pub struct WatchedHandle {
    inner: Arc<InnerHandle>,
    path: PathBuf,
    watch: Arc<SyncWatch>,
}

impl Handle for WatchedHandle {
    fn truncate(&self, offset: usize) -> Result<()> {
        self.inner.truncate(offset)
    }

    fn file_size(&self) -> Result<usize> {
        self.inner.file_size()
    }

    fn sync(&self) -> Result<()> {
        self.watch.sync(&self.path, &self.inner)
    }
}

impl FileSystem for WatchedFileSystem {
    type Handle = WatchedHandle;
    type Reader = <DefaultFileSystem as FileSystem>::Reader;
    type Writer = <DefaultFileSystem as FileSystem>::Writer;

    fn create<P: AsRef<Path>>(&self, path: P) -> Result<WatchedHandle> {
        let inner = self.inner.create(path.as_ref())?;
        Ok(self.watched(path.as_ref(), inner))
    }

    fn open<P: AsRef<Path>>(&self, path: P, permission: Permission) -> Result<WatchedHandle> {
        let inner = self.inner.open(path.as_ref(), permission)?;
        Ok(self.watched(path.as_ref(), inner))
    }

    fn delete<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        self.inner.delete(path)
    }

    fn rename<P: AsRef<Path>>(&self, source: P, destination: P) -> Result<()> {
        self.inner.rename(source, destination)
    }

    fn new_reader(&self, handle: Arc<WatchedHandle>) -> Result<Self::Reader> {
        self.inner.new_reader(handle.inner.clone())
    }

    fn new_writer(&self, handle: Arc<WatchedHandle>) -> Result<Self::Writer> {
        self.inner.new_writer(handle.inner.clone())
    }
}

fn quiet_next_panic(error: &Error) {
    SYNC_FAILED.with(|failed| *failed.borrow_mut() = Some(format!("{error:?}")));
}

/// Wraps the panic hook once: the panic raft-engine raises for a sync that
/// just failed on this thread (its message carries that error) is not
/// reported, since the replica's writer reports the failure; every other
/// panic is reported as before.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let failed = SYNC_FAILED.with(|failed| failed.borrow_mut().take());
            let payload = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            let expected = failed.is_some_and(|error| payload.contains(&error));
            if !expected {
                previous(info);
            }
        }));
    });
}
