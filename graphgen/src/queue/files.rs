//! The file operations the disk queue uses, behind two small traits so that a test can put a
//! recording layer in their place (the crash simulator in `queue/crash_sim.rs` builds every
//! state a power cut can leave from what it recorded). Writes are positioned: a failed or
//! partial write never moves where the next one lands.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file of the queue directory.
pub trait QueueFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// fdatasync: the file's data (and its length) on the device.
    fn sync_data(&self) -> io::Result<()>;
}

/// The queue directory. Names are plain file names inside it.
pub trait QueueDir: Send + Sync {
    fn names(&self) -> io::Result<Vec<String>>;
    /// Creates a file that must not exist yet.
    fn create_new(&self, name: &str) -> io::Result<Arc<dyn QueueFile>>;
    /// Creates a file, or empties it if it exists.
    fn create(&self, name: &str) -> io::Result<Arc<dyn QueueFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn QueueFile>>;
    fn remove(&self, name: &str) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// fsync of the directory itself: makes created, renamed and removed entries durable.
    fn sync(&self) -> io::Result<()>;
}

/// A real directory, locked for the process' lifetime: two processes never share a queue.
pub struct OsDir {
    path: PathBuf,
    _lock: File,
}

impl OsDir {
    pub fn open(path: &Path) -> io::Result<Self> {
        fs::create_dir_all(path)?;
        let lock = File::create(path.join("lock"))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::ResourceBusy,
                "another graphgen is using this queue directory",
            ),
            fs::TryLockError::Error(e) => e,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

struct OsFile(File);

impl QueueFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl QueueDir for OsDir {
    fn names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
    fn create_new(&self, name: &str) -> io::Result<Arc<dyn QueueFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(OsFile(file)))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn QueueFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(OsFile(file)))
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn QueueFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        Ok(Arc::new(OsFile(file)))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }
    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}
