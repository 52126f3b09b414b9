//! Where an installation's database is: a SQLite file in the data directory (the embedded
//! default), or a PostgreSQL database named by a URL (`--database`, `AGENTSEAL_DATABASE_URL`).

use std::path::PathBuf;

use super::StoreError;

/// The database an installation uses.
#[derive(Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PgLocation>),
}

/// A parsed PostgreSQL URL: the driver's settings, the TLS roots asked for, and a form to show.
#[derive(Clone)]
pub struct PgLocation {
    pub(super) config: tokio_postgres::Config,
    /// `sslrootcert`: the CA certificates (PEM) the server's certificate must chain to; without
    /// it, the platform's roots.
    pub(super) root_cert: Option<PathBuf>,
    shown: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// The path, or the URL without its password.
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(pg) => f.write_str(&pg.shown),
        }
    }
}

impl Location {
    /// Parses a `--database` value: a `postgres://` or `postgresql://` URL, with the driver's
    /// options (`sslmode=disable|prefer|require`, `connect_timeout`, `hostaddr`, ...) and
    /// `sslrootcert=PATH`. TLS, when used, always verifies the server's certificate and name.
    ///
    /// A server off this machine is reached over TLS only: without `sslmode`, or with `prefer`
    /// (which would fall back to clear text when someone on the path says the server has no
    /// TLS, and then hand them the password), it is `require`; `disable` is refused. On
    /// loopback or a Unix socket the driver's default (`prefer`) stands.
    pub fn parse(url: &str) -> Result<Location, StoreError> {
        let invalid = |why: &str| StoreError::InvalidUrl(why.to_owned());
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "expected postgres://USER@HOST:PORT/DATABASE (without --database, the installation uses SQLite in its data directory)",
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", path)) if !path.is_empty() => {
                    root_cert = Some(PathBuf::from(path));
                }
                _ => kept.push(pair),
            }
        }
        let driver_url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // The driver's own message may quote the URL; say only what is wrong.
        let config: tokio_postgres::Config = driver_url.parse().map_err(|e| {
            let e: tokio_postgres::Error = e;
            StoreError::InvalidUrl(
                e.to_string()
                    .replace(&driver_url, "<url>")
                    .replace(url, "<url>"),
            )
        })?;
        if config.get_hosts().is_empty() {
            return Err(invalid("the URL names no host"));
        }
        if config.get_dbname().is_none() {
            return Err(invalid("the URL names no database"));
        }
        let mut config = config;
        if !on_this_machine(&config) {
            match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => {
                    return Err(invalid(
                        "sslmode=disable would send the password and every record in clear text to a server off this machine: use sslmode=require",
                    ));
                }
                _ => {
                    config.ssl_mode(tokio_postgres::config::SslMode::Require);
                }
            }
        }
        let shown = show(&config);
        Ok(Location::Postgres(Box::new(PgLocation {
            config,
            root_cert,
            shown,
        })))
    }
}

impl PgLocation {
    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// Whether every address the URL names is this machine's (loopback, or a Unix socket), where no
/// one stands between client and server.
fn on_this_machine(config: &tokio_postgres::Config) -> bool {
    let loopback = |host: &str| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let hosts_local = config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(name) => loopback(name),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    });
    // A `hostaddr` is where the connection really goes.
    let addrs = config.get_hostaddrs();
    if addrs.is_empty() {
        hosts_local
    } else {
        addrs.iter().all(std::net::IpAddr::is_loopback)
    }
}

/// `postgres://user@host:port/dbname`: never the password.
fn show(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    format!(
        "postgres://{user}{host}{port}/{}",
        config.get_dbname().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password_and_bad_ones_refused() {
        let location =
            Location::parse("postgres://hub:s3cret@db.example:5433/agentseal?sslmode=require")
                .unwrap();
        assert_eq!(
            location.to_string(),
            "postgres://hub@db.example:5433/agentseal"
        );
        let Location::Postgres(pg) =
            Location::parse("postgresql://h@127.0.0.1/a?sslrootcert=/etc/ca.pem&sslmode=require")
                .unwrap()
        else {
            panic!("not postgres")
        };
        assert_eq!(pg.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        // Off this machine: TLS required, whatever the URL says short of refusing it.
        let mode = |url: &str| match Location::parse(url).unwrap() {
            Location::Postgres(pg) => pg.config.get_ssl_mode(),
            Location::Sqlite(_) => unreachable!(),
        };
        use tokio_postgres::config::SslMode;
        assert_eq!(mode("postgres://h@db.example/a"), SslMode::Require);
        assert_eq!(
            mode("postgres://h@db.example/a?sslmode=prefer"),
            SslMode::Require
        );
        assert_eq!(
            mode("postgres://h@10.0.0.5/a?sslmode=require"),
            SslMode::Require
        );
        assert_eq!(
            mode("postgres://h@localhost/a?hostaddr=10.0.0.5"),
            SslMode::Require,
            "hostaddr is where it goes"
        );
        // On loopback the driver's default stands; disable is allowed.
        assert_eq!(mode("postgres://h@127.0.0.1/a"), SslMode::Prefer);
        assert_eq!(
            mode("postgres://h@localhost/a?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(mode("postgres://h@[::1]:5432/a"), SslMode::Prefer);
        let clear = Location::parse("postgres://h:pw@db.example/a?sslmode=disable")
            .expect_err("clear text off the machine");
        assert!(clear.to_string().contains("sslmode=require"), "{clear}");
        for bad in [
            "mysql://h/a",
            "/var/lib/agentseal.db",
            "postgres://h:s3cret@host/a?sslmode=sometimes",
            "postgres://h@host",
        ] {
            let error = Location::parse(bad).expect_err(bad).to_string();
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
