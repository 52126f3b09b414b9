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
    /// options (`sslmode=disable|prefer|require`, `connect_timeout`, ...) and `sslrootcert=PATH`.
    /// TLS, when used, always verifies the server's certificate and name.
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
