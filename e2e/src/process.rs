//! A server process that cannot outlive the test process.
//!
//! `Drop` covers panics, but a test binary that is killed, or a control plane kept in a `static`
//! (statics are never dropped), would leave etcd and kube-apiserver running. So each server runs
//! under a small `sh` guard that holds the read end of a pipe whose write end only we hold: when
//! we close it, or when our process dies for any reason, the guard kills the server. The guard
//! also exits with the server's status, so an early crash is visible through `try_wait`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::{Error, Result};

// fd 3 keeps the pipe for the watcher: asynchronous commands get stdin from /dev/null otherwise.
// $1 is a directory to remove once the server has been stopped through the pipe (a `static`
// control plane is never dropped, so nothing else would); after a crash it is kept for its logs.
// The watcher only kills: a failing redirection there would end the subshell before the kill.
const GUARD: &str = r#"cleanup=$1
shift
exec 3<&0
"$@" </dev/null &
server=$!
( read -r _ <&3; kill -KILL "$server" ) 2>/dev/null &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
if [ "$status" = 137 ]; then rm -rf "$cleanup"; fi
exit "$status""#;

/// A running server under its guard.
#[derive(Debug)]
pub(crate) struct Server {
    name: &'static str,
    guard: Child,
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

impl Server {
    /// Starts `binary args...` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
        cleanup: &Path,
    ) -> Result<Self> {
        let out = File::create(&log).map_err(|source| Error::Io {
            context: format!("creating {}", log.display()),
            source,
        })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            context: format!("opening {}", log.display()),
            source,
        })?;
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg(name)
            .arg(cleanup)
            .arg(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Io {
                context: format!("starting {name} ({})", binary.display()),
                source,
            })?;
        let lifeline = guard.stdin.take();
        Ok(Self {
            name,
            guard,
            lifeline,
            log,
        })
    }

    /// `Some(description)` if the server has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.guard.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{} cannot be waited for: {e}", self.name)),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the server and waits until it is gone.
    pub(crate) fn stop(&mut self) {
        // Closing the pipe makes the guard kill the server and exit with it.
        drop(self.lifeline.take());
        if self.guard.wait().is_err() {
            let _ = self.guard.kill();
            let _ = self.guard.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for_file(path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return text.trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn stopping_kills_the_server_and_removes_its_directory() {
        let work = tempfile::tempdir().expect("temp dir");
        let data = work.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let pid_file = work.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 1000", pid_file.display());
        let mut server = Server::spawn(
            "sleeper",
            Path::new("/bin/sh"),
            &["-c".to_owned(), script],
            work.path().join("log"),
            &data,
        )
        .expect("spawn");
        let pid = wait_for_file(&pid_file);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists());
        assert!(server.exited().is_none());

        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!proc_dir.exists(), "server {pid} survived stop");
        assert!(!data.exists(), "data directory left behind");
    }

    #[test]
    fn a_crash_is_reported_and_its_log_kept() {
        let work = tempfile::tempdir().expect("temp dir");
        let log = work.path().join("log");
        let mut server = Server::spawn(
            "crasher",
            Path::new("/bin/sh"),
            &[
                "-c".to_owned(),
                "echo 'fatal: no etcd' >&2; exit 3".to_owned(),
            ],
            log.clone(),
            work.path(),
        )
        .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = server.exited() {
                break exit;
            }
            assert!(Instant::now() < deadline, "crash not noticed");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.contains("crasher exited"), "{exit}");
        assert!(exit.contains('3'), "{exit}");
        server.stop();
        assert_eq!(server.log_tail(5), "fatal: no etcd");
        assert!(log.exists(), "the log of a crashed server must be kept");
    }
}
