//! A real PostgreSQL server for the shared-state tests: Debian's `postgresql` programs, run as the
//! unprivileged `postgres` user from `initdb` in a temporary directory, listening on a loopback
//! address, stopped (by its data directory) on drop. tests/setup.sh installs the package.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest installed server's programs (`/usr/lib/postgresql/VERSION/bin`).
fn bin() -> String {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|v| Path::new(&format!("/usr/lib/postgresql/{v}/bin/initdb")).exists())
        .collect();
    versions.sort();
    let v = versions
        .pop()
        .expect("PostgreSQL is not installed: run `bash tests/setup.sh` as root first");
    format!("/usr/lib/postgresql/{v}/bin")
}
/// The database role every test server has (superuser of its own cluster).
pub const ROLE: &str = "nexus";

/// A running server.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Set when started with a password: the role's password.
    pub password: Option<String>,
    /// Set when started with TLS: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
}

#[derive(Default)]
pub struct Builder {
    password: Option<String>,
    tls: bool,
}

impl Builder {
    /// Password (scram-sha-256) authentication instead of trust.
    pub fn password(mut self, pw: &str) -> Builder {
        self.password = Some(pw.to_string());
        self
    }

    /// TLS with a certificate for the server's address, signed by a throwaway CA.
    pub fn tls(mut self) -> Builder {
        self.tls = true;
        self
    }

    pub fn start(self) -> Postgres {
        let bin = bin();
        let dir = tempfile::Builder::new()
            .prefix("nexus-pg-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        as_root(&format!("chown postgres: {} && chmod 700 {}", q(d), q(d)));
        let auth = match &self.password {
            Some(pw) => {
                std::fs::write(d.join("pw"), pw).unwrap();
                as_root(&format!("chown postgres: {}", q(&d.join("pw"))));
                format!("-A scram-sha-256 --pwfile={}", q(&d.join("pw")))
            }
            None => "-A trust".into(),
        };
        as_postgres(&format!(
            "{bin}/initdb -D {data} {auth} -U {ROLE} --no-sync >/dev/null",
            data = q(&d.join("data"))
        ));
        let ip = super::next_ip();
        let port = super::free_port(ip);
        let mut ca = None;
        if self.tls {
            ca = Some(certificates(d, ip));
            let conf = d.join("data/postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(&format!(
                "\nssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n",
                d = d.display()
            ));
            std::fs::write(&conf, text).unwrap();
        }
        let pg = Postgres {
            dir,
            ip,
            port,
            password: self.password,
            ca,
        };
        pg.restart();
        pg
    }
}

impl Postgres {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A trust-authenticated server without TLS.
    pub fn start() -> Postgres {
        Builder::default().start()
    }

    /// `postgresql://nexus@IP:PORT/postgres`, plus `query` (`sslmode=...`) when not empty.
    pub fn url(&self, query: &str) -> String {
        let base = format!("postgresql://{ROLE}@{}:{}/postgres", self.ip, self.port);
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// Runs SQL with psql as the server's superuser, returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// [`Postgres::psql`], with the server's error instead of a panic (the schema may not
    /// exist yet while nexus creates it).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(format!(
                "host={} port={} user={ROLE} dbname=postgres sslmode=disable",
                self.dir.path().display(),
                self.port
            ))
            .output()
            .expect("psql");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Stops the server at once (in-flight sessions are cut off).
    pub fn stop(&self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {} -m immediate stop >/dev/null 2>&1 || true",
            bin(),
            q(&self.dir.path().join("data"))
        ));
    }

    /// Starts it (again after [`Postgres::stop`]), on its address and port.
    pub fn restart(&self) {
        let d = self.dir.path();
        as_postgres(&format!(
            "{bin}/pg_ctl -D {data} -o \"-k {sock} -h {ip} -p {port} -c fsync=off\" -l {log} -w start >/dev/null",
            data = q(&d.join("data")),
            sock = d.display(),
            ip = self.ip,
            port = self.port,
            log = q(&d.join("log")),
            bin = bin(),
        ));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        // The directory belongs to postgres; give it back so TempDir can remove it.
        as_root(&format!("chown -R root: {}", q(self.dir.path())));
    }
}

/// A CA and a server certificate for `ip`, made with openssl; returns the CA's path.
fn certificates(d: &Path, ip: Ipv4Addr) -> PathBuf {
    let script = format!(
        "cd {d} && \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=nexus-test-ca -keyout ca.key -out ca.crt 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={ip} \
           -keyout server.key -out server.csr 2>/dev/null && \
         printf 'subjectAltName=IP:{ip}\\nbasicConstraints=CA:FALSE\\n' > ext && \
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext -out server.crt 2>/dev/null && \
         chown postgres: server.key server.crt && chmod 600 server.key",
        d = q(d)
    );
    as_root(&script);
    d.join("ca.crt")
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn as_root(script: &str) {
    run(Command::new("sh").args(["-c", script]), script);
}

fn as_postgres(script: &str) {
    run(
        Command::new("runuser").args(["-u", "postgres", "--", "sh", "-c", script]),
        script,
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
