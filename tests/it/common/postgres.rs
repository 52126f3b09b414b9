//! A real PostgreSQL server for the tests: a throwaway cluster made with the server's own
//! `initdb`, run with `pg_ctl` on a free loopback port, and removed afterwards. Debian's
//! `postgresql` package provides the programs (tools/install-test-deps.sh installs it); they
//! refuse to run as root, so as root the cluster belongs to the `postgres` user.
//!
//! One shared cluster serves most tests, each in a database of its own ([`database`]); a test
//! that stops and restarts the server starts a cluster of its own ([`Cluster::start`]). A
//! watchdog process stops each cluster and deletes its files once the test binary has exited,
//! however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// The newest server's programs, or a clear failure: a missing server is a broken test set-up,
/// never a reason to skip.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run tools/install-test-deps.sh",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Makes and starts a new cluster; the watchdog removes it when this process ends.
    pub fn start() -> Cluster {
        Cluster::start_with(|_| {})
    }

    /// A cluster that offers TLS with a certificate for `localhost` (and only that name),
    /// issued by a CA of its own; returns it and that CA's certificate (PEM). Made with the
    /// `openssl` command.
    pub fn start_tls() -> (Cluster, PathBuf) {
        let pki = tempfile::Builder::new()
            .prefix("agentseal-pki-")
            .tempdir()
            .unwrap()
            .keep();
        let ca = pki.join("ca.pem");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&pki)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=agentseal test CA",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            pki.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        let cluster = Cluster::start_with(|data| {
            for file in ["server.crt", "server.key"] {
                std::fs::copy(pki.join(file), data.join(file)).unwrap();
            }
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        });
        (cluster, ca)
    }

    /// As [`Cluster::start`], with `configure` run on the data directory before the server
    /// first starts.
    fn start_with(configure: impl FnOnce(&Path)) -> Cluster {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("agentseal-pg-")
            .tempdir()
            .unwrap()
            .keep();
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown of the cluster directory");
        }
        let cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = cluster.data();
        let initdb = cluster
            .program("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "agentseal",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        configure(&data);
        if cluster.as_postgres {
            // What `configure` wrote (a key the server refuses unless its own and private).
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(owned.success());
        }
        let key = data.join("server.key");
        if key.exists() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        cluster.pg_ctl_start();
        cluster.watch();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command running `name` from the server's programs, as the cluster's owner.
    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = self
            .program("pg_ctl")
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .arg("-D")
            .arg(self.data())
            .arg("start")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown: open transactions are rolled back, connections closed).
    pub fn pg_ctl_stop(&self) {
        let out = self
            .program("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server and removes its files once this process has exited.
    fn watch(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -m immediate -D {} stop",
                pg_ctl.display(),
                self.data().display()
            )
        } else {
            format!(
                "{} -m immediate -D {} stop",
                pg_ctl.display(),
                self.data().display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        // `setsid -f` forks the watchdog off and returns at once.
        let started = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the cluster's watchdog");
        assert!(started.success(), "the cluster's watchdog did not start");
    }

    /// Runs SQL as the superuser in database `db`, returning its output (unaligned, no headers).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "agentseal", "-d", db])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A new, empty database of its own; returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://agentseal@127.0.0.1:{}/{name}", self.port)
    }

    /// A full dump of database `name` as SQL text (`pg_dump`), for scanning.
    pub fn dump(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "agentseal",
            ])
            .arg(name)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Replaces database `name` with what `dump` (from [`Cluster::dump`]) holds: the database as
    /// it was then, as an operator's restore from a backup would leave it.
    pub fn restore(&self, name: &str, dump: &str) {
        self.psql("postgres", &format!("DROP DATABASE {name}"));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), dump).unwrap();
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "agentseal",
                "-d",
                name,
                "-f",
            ])
            .arg(file.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The cluster's directory (its log is `server.log` there).
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The cluster the tests share, started on first use.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(Cluster::start)
}

/// A new, empty database in the shared cluster; returns its URL.
pub fn database() -> String {
    shared().database()
}
