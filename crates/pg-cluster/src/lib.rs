//! A private PostgreSQL cluster run from the machine's own server binaries.
//!
//! Parley's demo mode and its test suite need a real PostgreSQL without anyone starting
//! one by hand. This crate finds `initdb` and `postgres` (on `PATH` or under
//! `/usr/lib/postgresql/*/bin`), creates a cluster on first use, and runs the server
//! listening only on a unix socket in a short private directory (socket paths are limited
//! to about 100 bytes, so the socket never lives under a deep checkout).
//!
//! Started as root, the server runs as an unprivileged system user (`postgres` by default)
//! because PostgreSQL refuses to run as root. When that user cannot reach the requested
//! data directory (a checkout under a 0700 home such as `/root` is common), the cluster is
//! kept under `/var/lib/parley/clusters/<hash>` instead and the data directory records
//! where.
//!
//! The server is supervised by a tiny shell that holds a pipe from this process: when this
//! process exits for any reason, even `kill -9`, the pipe closes and the shell stops the
//! server with a fast shutdown. So no orphaned server survives its owner.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    os::unix::{
        fs::{PermissionsExt as _, chown},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

/// Why the cluster could not be started; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries not found (looked for `{0}` and `initdb` in PARLEY_PG_BIN, or on PATH and under /usr/lib/postgresql/*/bin); install Debian's `postgresql` package, point PARLEY_PG_BIN at its bin directory, or set DATABASE_URL"
    )]
    BinaryNotFound(&'static str),
    /// Started as root but the unprivileged user does not exist.
    #[error(
        "running as root, but the system user `{0}` that PostgreSQL must run as does not exist; install Debian's `postgresql` package (it creates the user) or set PARLEY_PG_USER"
    )]
    NoUnprivilegedUser(String),
    /// A live server already owns the data directory.
    #[error(
        "the PostgreSQL data directory {0} is in use by a running server (pid {1}); stop the other Parley or choose another PARLEY_DATA_DIR"
    )]
    InUse(PathBuf, u32),
    /// `initdb` failed.
    #[error("initdb failed for {dir}: {log}")]
    Initdb {
        /// The data directory being created.
        dir: PathBuf,
        /// The tail of initdb's output.
        log: String,
    },
    /// The server exited or did not become ready.
    #[error("PostgreSQL did not start (see {log_path}): {log}")]
    Start {
        /// Where the full server log is.
        log_path: PathBuf,
        /// The tail of the server log.
        log: String,
    },
    /// A filesystem or process error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Parley's data directory; the cluster lives in `<data_dir>/pg` when reachable.
    pub data_dir: PathBuf,
    /// Remove everything (data and socket) when the cluster stops: for tests.
    pub ephemeral: bool,
    /// Trade durability for speed (`fsync=off` and friends): for tests only.
    pub fast_unsafe: bool,
    /// The system user the server runs as when this process is root.
    pub unprivileged_user: String,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// Where the unix socket goes; `None`: a fresh short directory under the temporary
    /// directory. A fixed one keeps the connection URL the same across restarts.
    pub socket_dir: Option<PathBuf>,
}

impl ClusterOptions {
    /// A durable cluster under `data_dir`, as the demo mode runs it.
    pub fn persistent(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ephemeral: false,
            fast_unsafe: false,
            unprivileged_user: "postgres".to_owned(),
            settings: Vec::new(),
            socket_dir: None,
        }
    }

    /// A throw-away cluster in a fresh temporary directory, as the tests run it.
    pub fn ephemeral() -> Self {
        let dir = std::env::temp_dir().join(format!("parley-test-{}", random_hex(6)));
        Self {
            data_dir: dir,
            ephemeral: true,
            fast_unsafe: true,
            unprivileged_user: "postgres".to_owned(),
            settings: vec![("max_connections".to_owned(), "300".to_owned())],
            socket_dir: None,
        }
    }
}

/// The database superuser every cluster is created with.
pub const SUPERUSER: &str = "parley";

/// A running cluster. Dropping it (or calling [`Cluster::stop`]) stops the server.
#[derive(Debug)]
pub struct Cluster {
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Cluster {
    /// Initialise the cluster if needed, start the server and wait until it accepts
    /// connections. Blocking; call it from start-up code or `spawn_blocking`.
    pub fn start(opts: &ClusterOptions) -> Result<Self, ClusterError> {
        let bin = find_bin_dir()?;
        let run_as = if is_root()? {
            Some(lookup_user(&opts.unprivileged_user)?)
        } else {
            None
        };

        fs::create_dir_all(&opts.data_dir).map_err(io_err(format!(
            "creating data directory {}",
            opts.data_dir.display()
        )))?;
        let pgdata = resolve_pgdata(&opts.data_dir, run_as.as_ref(), opts.ephemeral)?;
        let log_path = opts.data_dir.join("postgres.log");
        let log_path = if run_as.is_some() && !pgdata.starts_with(&opts.data_dir) {
            pgdata.with_extension("log")
        } else {
            log_path
        };

        if !pgdata.join("PG_VERSION").exists() {
            initdb(&bin, &pgdata, run_as.as_ref(), opts.fast_unsafe)?;
        }
        clear_stale_pidfile(&pgdata)?;

        let socket_dir = opts
            .socket_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("parley-pg-{}", random_hex(4))));
        let socket_dir = if socket_dir.as_os_str().len() > 80 {
            PathBuf::from("/tmp").join(format!("parley-pg-{}", random_hex(4)))
        } else {
            socket_dir
        };
        make_private_dir(&socket_dir, run_as.as_ref())?;
        // The log must be writable by the server's user.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        if let Some(u) = &run_as {
            chown(&log_path, Some(u.uid), Some(u.gid))
                .map_err(io_err(format!("chown {}", log_path.display())))?;
        }
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);

        let mut args: Vec<String> = vec![
            "-D".into(),
            pgdata.display().to_string(),
            "-k".into(),
            socket_dir.display().to_string(),
            "-c".into(),
            "listen_addresses=".into(),
            "-c".into(),
            "unix_socket_permissions=0700".into(),
        ];
        if opts.fast_unsafe {
            for s in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                args.push("-c".into());
                args.push(s.into());
            }
        }
        for (k, v) in &opts.settings {
            args.push("-c".into());
            args.push(format!("{k}={v}"));
        }

        // The supervising shell: starts the server in the background, waits for this
        // process's pipe to close (normal stop or our death), then stops the server and,
        // for an ephemeral cluster, removes its files.
        let script = r#"
postgres="$1"; log="$2"; cleanup="$3"; sockdir="$4"; shift 4
"$postgres" "$@" >>"$log" 2>&1 </dev/null &
pid=$!
trap '' INT TERM HUP
while read -r _line; do :; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$sockdir"
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
"#;
        let cleanup = if opts.ephemeral {
            opts.data_dir.display().to_string()
        } else {
            String::new()
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg("parley-pg-supervisor")
            .arg(bin.join("postgres"))
            .arg(&log_path)
            .arg(cleanup)
            .arg(&socket_dir)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C at the terminal reaches only the gateway, which
            // then shuts down in order and stops the server last.
            .process_group(0);
        if let Some(u) = &run_as {
            cmd.uid(u.uid).gid(u.gid);
            cmd.env("HOME", &u.home);
        }
        let mut child = cmd
            .spawn()
            .map_err(io_err("starting the PostgreSQL supervisor"))?;
        let stdin = child.stdin.take();
        let mut cluster = Cluster {
            pgdata,
            socket_dir,
            log_path,
            child: Some(child),
            stdin,
        };
        cluster.wait_ready(log_start)?;
        Ok(cluster)
    }

    /// The directory holding the server's unix socket; use it as the connection host.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's `PGDATA`.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// The port number that names the socket file (`.s.PGSQL.<port>`).
    pub fn port(&self) -> u16 {
        5432
    }

    /// A libpq-style URL for database `db` over the unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/{db}?host={}&port={}",
            self.socket_dir.display(),
            self.port()
        )
    }

    fn wait_ready(&mut self, log_start: u64) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pidfile = self.pgdata.join("postmaster.pid");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return Err(self.start_error(log_start));
            }
            // Line 8 of postmaster.pid is the postmaster status; "ready" once it accepts
            // connections.
            if let Ok(text) = fs::read_to_string(&pidfile)
                && text.lines().nth(7).is_some_and(|l| l.trim() == "ready")
                && self.socket_dir.join(".s.PGSQL.5432").exists()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let err = self.start_error(log_start);
                self.stop_inner();
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_error(&self, log_start: u64) -> ClusterError {
        let mut log = String::new();
        if let Ok(mut f) = fs::File::open(&self.log_path) {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            let from = usize::try_from(log_start).unwrap_or(0).min(buf.len());
            log = String::from_utf8_lossy(&buf[from..]).into_owned();
        }
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        ClusterError::Start {
            log_path: self.log_path.clone(),
            log: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        }
    }

    /// Stop the server (fast shutdown) and wait for it to exit.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        // Closing the pipe tells the supervisor to stop the server.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
            drop(stdin);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

#[derive(Debug, Clone)]
struct SysUser {
    uid: u32,
    gid: u32,
    home: String,
}

fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    // An explicit directory is the only place looked at.
    if let Ok(dir) = std::env::var("PARLEY_PG_BIN")
        && !dir.trim().is_empty()
    {
        let dir = PathBuf::from(dir);
        if dir.join("postgres").is_file() && dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(ClusterError::BinaryNotFound("postgres"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    // Debian's layout: /usr/lib/postgresql/<major>/bin, newest first.
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    for dir in candidates {
        let postgres = dir.join("postgres");
        let initdb = dir.join("initdb");
        if postgres.is_file() && initdb.is_file() {
            // Resolve symlinks so both binaries come from one installation.
            let real = fs::canonicalize(&postgres).unwrap_or(postgres);
            if let Some(parent) = real.parent()
                && parent.join("initdb").is_file()
            {
                return Ok(parent.to_path_buf());
            }
            return Ok(dir);
        }
    }
    Err(ClusterError::BinaryNotFound("postgres"))
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn is_root() -> Result<bool, ClusterError> {
    // /proc/self/status: "Uid:\treal\teffective\t...".
    let status =
        fs::read_to_string("/proc/self/status").map_err(io_err("reading /proc/self/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0"))
}

fn lookup_user(name: &str) -> Result<SysUser, ClusterError> {
    let missing = || ClusterError::NoUnprivilegedUser(name.to_owned());
    let uid = command_output("id", &["-u", name])
        .and_then(|s| s.parse().ok())
        .ok_or_else(missing)?;
    let gid = command_output("id", &["-g", name])
        .and_then(|s| s.parse().ok())
        .ok_or_else(missing)?;
    Ok(SysUser {
        uid,
        gid,
        home: "/".to_owned(),
    })
}

/// Can `user` create files inside `dir`? Asked of the kernel by running `test` as that
/// user, which accounts for every ancestor's permissions and ACLs.
fn user_can_write(dir: &Path, user: &SysUser) -> bool {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"test -d "$1" && test -w "$1" && test -x "$1""#)
        .arg("sh")
        .arg(dir)
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn make_private_dir(dir: &Path, owner: Option<&SysUser>) -> Result<(), ClusterError> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", dir.display())))?;
    if let Some(u) = owner {
        chown(dir, Some(u.uid), Some(u.gid)).map_err(io_err(format!("chown {}", dir.display())))?;
    }
    Ok(())
}

/// Decide where `PGDATA` lives and make sure the server's user owns it.
fn resolve_pgdata(
    data_dir: &Path,
    run_as: Option<&SysUser>,
    ephemeral: bool,
) -> Result<PathBuf, ClusterError> {
    let local = data_dir.join("pg");
    let Some(user) = run_as else {
        if !local.exists() {
            make_private_dir(&local, None)?;
        }
        return Ok(local);
    };
    let pointer = data_dir.join("pg-location");
    if let Ok(saved) = fs::read_to_string(&pointer) {
        let saved = PathBuf::from(saved.trim());
        if saved.join("PG_VERSION").exists() {
            return Ok(saved);
        }
    }
    if local.join("PG_VERSION").exists() {
        return Ok(local);
    }
    if ephemeral {
        // A fresh temporary directory: hand the whole of it to the server's user so the
        // supervisor can remove it at the end.
        chown(data_dir, Some(user.uid), Some(user.gid))
            .map_err(io_err(format!("chown {}", data_dir.display())))?;
        make_private_dir(&local, Some(user))?;
        return Ok(local);
    }
    // Let the server's user traverse (not list) the data directory, then check that every
    // ancestor lets it through too.
    let mode = fs::metadata(data_dir)
        .map_err(io_err(format!("reading {}", data_dir.display())))?
        .permissions()
        .mode();
    if mode & 0o001 == 0 {
        fs::set_permissions(
            data_dir,
            fs::Permissions::from_mode((mode & 0o7777) | 0o001),
        )
        .map_err(io_err(format!("chmod {}", data_dir.display())))?;
    }
    make_private_dir(&local, Some(user))?;
    if user_can_write(&local, user) {
        return Ok(local);
    }
    let _ = fs::remove_dir(&local);
    // Unreachable (e.g. under a 0700 home): keep the cluster in a system location and
    // remember where.
    let abs = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let outside = PathBuf::from("/var/lib/parley/clusters").join(format!(
        "{:016x}",
        fnv1a(abs.as_os_str().as_encoded_bytes())
    ));
    fs::create_dir_all("/var/lib/parley/clusters")
        .map_err(io_err("creating /var/lib/parley/clusters"))?;
    make_private_dir(&outside, Some(user))?;
    fs::write(&pointer, outside.display().to_string())
        .map_err(io_err(format!("writing {}", pointer.display())))?;
    tracing::info!(
        pgdata = %outside.display(),
        "the PostgreSQL user cannot reach the data directory; keeping the cluster outside it"
    );
    Ok(outside)
}

fn initdb(
    bin: &Path,
    pgdata: &Path,
    run_as: Option<&SysUser>,
    no_sync: bool,
) -> Result<(), ClusterError> {
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(pgdata)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ])
        .stdin(Stdio::null());
    if no_sync {
        cmd.arg("--no-sync");
    }
    if let Some(u) = run_as {
        cmd.uid(u.uid).gid(u.gid).env("HOME", &u.home);
    }
    // initdb refuses a non-empty directory: it must be ours and empty here.
    let out = cmd.output().map_err(io_err("running initdb"))?;
    if !out.status.success() {
        let mut log = String::from_utf8_lossy(&out.stderr).into_owned();
        if log.trim().is_empty() {
            log = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        return Err(ClusterError::Initdb {
            dir: pgdata.to_path_buf(),
            log: log.lines().rev().take(3).collect::<Vec<_>>().join(" | "),
        });
    }
    Ok(())
}

/// A `postmaster.pid` left by a killed server is removed unless its process is a live
/// PostgreSQL server (then the directory is in use and we stop with a clear error).
fn clear_stale_pidfile(pgdata: &Path) -> Result<(), ClusterError> {
    let pidfile = pgdata.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pidfile) else {
        return Ok(());
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        let _ = fs::remove_file(&pidfile);
        return Ok(());
    };
    // A supervisor whose owner was just killed may still be shutting its server down.
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_postgres_process(pid) {
        if Instant::now() > deadline {
            return Err(ClusterError::InUse(pgdata.to_path_buf(), pid));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if pidfile.exists() {
        fs::remove_file(&pidfile)
            .map_err(io_err(format!("removing stale {}", pidfile.display())))?;
    }
    Ok(())
}

fn is_postgres_process(pid: u32) -> bool {
    let mut buf = Vec::new();
    match fs::File::open(format!("/proc/{pid}/cmdline")) {
        Ok(mut f) => {
            let _ = f.read_to_end(&mut buf);
            let cmd = String::from_utf8_lossy(&buf);
            let first = cmd.split('\0').next().unwrap_or_default();
            first.ends_with("postgres") || first.starts_with("postgres:")
        }
        Err(_) => false,
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `n` random bytes, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0_u8; n];
    // getrandom only fails when the OS has no entropy source at all.
    if getrandom::fill(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = fnv1a(&t.to_le_bytes()) ^ u64::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8;
        }
    }
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable_across_runs() {
        // The fallback cluster location is derived from this hash: it must never change.
        assert_eq!(
            fnv1a(b"/root/parley/.parley"),
            fnv1a(b"/root/parley/.parley")
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn stale_pidfile_of_a_dead_process_is_removed() {
        let dir = std::env::temp_dir().join(format!("parley-pidfile-{}", random_hex(4)));
        fs::create_dir_all(&dir).expect("temp dir");
        // pid 0 is never a user process.
        fs::write(dir.join("postmaster.pid"), "999999999\n/x\n").expect("write");
        clear_stale_pidfile(&dir).expect("stale pidfile is cleared");
        assert!(!dir.join("postmaster.pid").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
