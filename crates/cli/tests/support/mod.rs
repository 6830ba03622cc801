//! Helpers shared by the OS-process tests: process groups, bounded waits,
//! scratch folders.
#![allow(dead_code)] // each test binary uses a subset

pub mod validators;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A process and its children in their own process group, killed on drop
/// (`quartier devnet` starts its validators as children).
pub struct ProcessGroup(Child);

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> ProcessGroup {
        use std::os::unix::process::CommandExt as _;
        ProcessGroup(cmd.process_group(0).spawn().unwrap())
    }

    /// The leader's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The leader's exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().unwrap()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Polls `probe` until it gives a value, failing the test after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A fresh folder for `name` on tmpfs when there is one (commonware's
/// runtime syncfs()es the storage filesystem at start, slow on a busy disk).
pub fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("quartier-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
