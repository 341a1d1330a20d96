//! Test harness: the real `gatehouse` binary on an ephemeral port with real
//! TLS (a test CA made with rcgen), a recording upstream HTTP server and an
//! SMTP sink that receives the mails. Everything stops on `Drop`.
#![allow(dead_code)]

pub mod backends;
pub mod peer;
pub mod pg;
pub mod raw;
pub mod smtp;
pub mod totp;
pub mod upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use smtp::{SinkOptions, SinkTls, SmtpSink};
#[allow(unused_imports)]
pub use upstream::{Recorded, RecordingUpstream};

/// A CA and a server certificate for localhost/127.0.0.1 signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);

        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let cert_path = dir.join("server-cert.pem");
        let key_path = dir.join("server-key.pem");
        std::fs::write(&cert_path, leaf.pem()).unwrap();
        std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
        TestCa {
            ca_pem: ca_cert.pem(),
            cert_path,
            key_path,
        }
    }

    /// A rustls client config trusting only this CA, offering h2 and http/1.1.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}

/// Knobs a test may change in the generated config.
#[derive(Clone)]
pub struct Options {
    pub tls: bool,
    pub extra_toml: String,
    pub session: String,
    pub otp: String,
    pub routes: String,
    pub upstream_timeout: &'static str,
    /// `mail.transport`.
    pub transport: &'static str,
    /// Extra keys for the `[mail]` table.
    pub mail: String,
    /// Extra keys for the `[mail.smtp]` table.
    pub smtp: String,
    /// How the SMTP server behaves.
    pub sink: SinkOptions,
    /// TLS mode of the SMTP server (built from the test CA).
    pub sink_tls: SinkTlsMode,
    /// Whether `[mail.smtp] ca_file` names the test CA (when TLS is on).
    pub trust_test_ca: bool,
    /// Extra keys for the `[admin]` section (listen defaults to port 0).
    pub admin: String,
    /// Extra environment variables for the server process.
    pub env: Vec<(String, String)>,
    /// Extra keys for the `[store]` table (e.g. `kind = "postgres"`). When
    /// empty and `GATEHOUSE_TEST_STORE=postgres`, a fresh PostgreSQL
    /// database is used (see `pg`).
    pub store: String,
    /// `store.sweep_interval` (how often expired records are removed).
    pub sweep_interval: &'static str,
    /// Runs the server in-process on a manual clock ([`Gatehouse::advance`])
    /// instead of spawning the binary; see [`Gatehouse::spawn_in_process`].
    pub manual_clock: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SinkTlsMode {
    None,
    StartTls,
    Implicit,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: true,
            extra_toml: String::new(),
            session: String::new(),
            otp: String::new(),
            routes: "[[route]]\nprefix = \"/api/v2/\"\nauth = \"required\"\n\
                     [[route]]\nprefix = \"/api/v2/public/\"\nauth = \"none\"\n\
                     [[route]]\nprefix = \"/\"\nauth = \"optional\"\n"
                .into(),
            upstream_timeout: "2s",
            transport: "smtp",
            mail: String::new(),
            smtp: String::new(),
            sink: SinkOptions::default(),
            sink_tls: SinkTlsMode::None,
            trust_test_ca: true,
            admin: String::new(),
            env: Vec::new(),
            store: String::new(),
            sweep_interval: "1s",
            manual_clock: false,
        }
    }
}

/// A running gatehouse with its own upstream, SMTP sink and store.
pub struct Gatehouse {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub upstream: RecordingUpstream,
    pub smtp: SmtpSink,
    pub config_path: PathBuf,
    pub addr: SocketAddr,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`), if enabled.
    pub admin_addr: Option<SocketAddr>,
    pub tls: bool,
    env: Vec<(String, String)>,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    /// The database the harness created for this server
    /// (`GATEHOUSE_TEST_STORE=postgres`), dropped with it.
    own_database: Option<String>,
    /// The manual clock of an in-process server (`Options::manual_clock`).
    clock: Option<gatehouse::Clock>,
    in_process: Option<InProcess>,
}

/// A server running in-process on its own runtime and thread.
pub struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

impl Gatehouse {
    pub async fn start() -> Gatehouse {
        Gatehouse::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Gatehouse {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::create(dir.path());
        let upstream = RecordingUpstream::start().await;
        let ca_path = dir.path().join("test-ca.pem");
        std::fs::write(&ca_path, &ca.ca_pem).unwrap();
        let mut sink = opts.sink.clone();
        let security = match opts.sink_tls {
            SinkTlsMode::None => "none",
            SinkTlsMode::StartTls => {
                sink.tls = Some(SinkTls::StartTls(smtp::tls_acceptor(&ca)));
                "starttls"
            }
            SinkTlsMode::Implicit => {
                sink.tls = Some(SinkTls::Implicit(smtp::tls_acceptor(&ca)));
                "tls"
            }
        };
        let ca_line = if opts.trust_test_ca && opts.sink_tls != SinkTlsMode::None {
            format!("ca_file = \"{}\"\n", ca_path.display())
        } else {
            String::new()
        };
        let smtp = SmtpSink::start_with(sink).await;
        let tls = if opts.tls {
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                ca.cert_path.display(),
                ca.key_path.display()
            )
        } else {
            String::new()
        };
        let own_database = if opts.store.is_empty() && pg::suite_on_postgres() {
            Some(pg::fresh_database().await)
        } else {
            None
        };
        let store_extra = match &own_database {
            Some(url) => format!("kind = \"postgres\"\nurl = \"{url}\"\n"),
            None => opts.store.clone(),
        };
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n{extra}\n\
             {tls}\n\
             [upstream]\nurl = \"http://{up}\"\ntimeout = \"{ut}\"\nconnect_timeout = \"1s\"\n\
             [store]\npath = \"{store}\"\nsweep_interval = \"{sweep}\"\n{store_extra}\n\
             [mail]\ntransport = \"{transport}\"\nfrom = \"Flowtask <no-reply@example.com>\"\n{mail}\n\
             [mail.smtp]\nhost = \"{smtp_host}\"\nport = {smtp}\nsecurity = \"{security}\"\ntimeout = \"5s\"\n{ca_line}{smtp_extra}\n\
             [session]\ncookie_name = \"sid\"\n{session}\n\
             [otp]\n{otp}\n\
             {routes}\n\
             [admin]\n{admin}\n",
            extra = opts.extra_toml,
            up = upstream.addr,
            ut = opts.upstream_timeout,
            store = dir.path().join("data/gatehouse.redb").display(),
            sweep = opts.sweep_interval,
            smtp = smtp.addr.port(),
            transport = opts.transport,
            mail = opts.mail,
            smtp_extra = opts.smtp,
            // The test certificate names localhost; plain mode keeps the IP.
            smtp_host = if opts.sink_tls == SinkTlsMode::None {
                "127.0.0.1"
            } else {
                "localhost"
            },
            session = opts.session,
            otp = opts.otp,
            routes = opts.routes,
            admin = if opts.admin.contains("listen") {
                opts.admin.clone()
            } else {
                format!("listen = \"127.0.0.1:0\"\n{}", opts.admin)
            },
        );
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut g = Gatehouse {
            dir,
            ca,
            upstream,
            smtp,
            config_path,
            addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: None,
            tls: opts.tls,
            env: opts.env.clone(),
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            own_database,
            clock: opts.manual_clock.then(gatehouse::Clock::manual),
            in_process: None,
        };
        g.spawn();
        g
    }

    /// Moves the in-process server's clock forward: what expires after
    /// `by` has expired now, without waiting for it.
    pub fn advance(&self, by: Duration) {
        let clock = self.clock.expect("started with Options::manual_clock");
        assert!(clock.advance(by), "a manual clock moves");
    }

    fn spawn(&mut self) {
        if let Some(clock) = self.clock {
            return self.spawn_in_process(clock);
        }
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = self.logs.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let admin = Arc::new(Mutex::new(None));
        let admin_seen = admin.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("admin endpoints on ").nth(1) {
                    *admin_seen.lock().unwrap() = Some(address_after_scheme(rest));
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(address_after_scheme(rest));
                }
                logs.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("gatehouse did not start; log:\n{}", self.logs()));
        self.addr = addr.parse().unwrap();
        // The admin line is logged before the public one.
        self.admin_addr = admin
            .lock()
            .unwrap()
            .as_deref()
            .and_then(|a| a.parse().ok());
        self.child = Some(child);
    }

    /// Stops with SIGTERM and starts again on the same store (new port).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills with SIGKILL (no shutdown) and starts again on the same store.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn();
    }

    pub fn stop(&mut self) {
        self.stop_in_process();
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, …) to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the server to exit on its own; `None` if it is still running
    /// after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub async fn wait_for_log_line(&self, needle: &str, limit: Duration) -> String {
        self.wait_for_log_within(&[needle], limit).await
    }

    /// Log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Runs the `gatehouse` binary with `args` plus `--config <this config>`,
    /// feeding `stdin`; returns (exit success, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        run_cli(&self.config_path, args, stdin)
    }

    /// `http://ADMIN/path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.admin_addr.expect("admin listener enabled");
        format!("http://{addr}{path}")
    }

    /// The text of `/metrics` on the admin listener.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// Waits (up to 10 s) for a log line containing every one of `needles`.
    pub async fn wait_for_log(&self, needles: &[&str]) -> String {
        self.wait_for_log_within(needles, Duration::from_secs(10))
            .await
    }

    async fn wait_for_log_within(&self, needles: &[&str], limit: Duration) -> String {
        let found = eventually(limit, || {
            self.logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
        })
        .await;
        found.unwrap_or_else(|| panic!("no log line with {needles:?}; log:\n{}", self.logs()))
    }

    /// Log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// POSTs send-otp for `email` and expects 200 (the mail is only queued).
    pub async fn send_otp(&self, email: &str) {
        let resp = self
            .post_json(
                "/api/v1/user/signup/send-otp",
                serde_json::json!({ "email": email }),
            )
            .await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// Verifies `code` for `email`; returns the status.
    pub async fn verify(&self, email: &str, code: &str) -> u16 {
        self.post_json(
            "/api/v1/user/signup/verify",
            serde_json::json!({ "email": email, "code": code, "password": "password1" }),
        )
        .await
        .status()
        .as_u16()
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}{path}", self.addr.port())
    }

    /// The cookie name as the server sends it.
    pub fn cookie_name(&self) -> &'static str {
        if self.tls { "__Host-sid" } else { "sid" }
    }

    /// An HTTP/1.1 client that trusts the test CA and keeps no cookies.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder(&[b"http/1.1"]).build().unwrap()
    }

    /// An HTTP/2 client (ALPN h2).
    pub fn h2_client(&self) -> reqwest::Client {
        self.client_builder(&[b"h2"])
            .http2_prior_knowledge()
            .build()
            .unwrap()
    }

    fn client_builder(&self, alpn: &[&[u8]]) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.ca.client_config(alpn))
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json_with_cookie(
        &self,
        path: &str,
        body: serde_json::Value,
        cookie: &str,
    ) -> reqwest::Response {
        self.client()
            .post(self.url(path))
            .header("cookie", cookie)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` over HTTP/1.1 with the `Cookie` header `cookie`.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.client()
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }

    /// Sends a code to `email` and returns it, read from the SMTP sink.
    pub async fn request_code(&self, email: &str) -> String {
        let before = self.smtp.count_to(email);
        self.send_otp(email).await;
        let mail = self.smtp.wait_for_nth(email, before + 1).await;
        extract_code(&mail).unwrap_or_else(|| panic!("no code in mail:\n{mail}"))
    }

    /// Signs up `email` with `password`; returns `name=value` of the session cookie.
    pub async fn sign_up(&self, email: &str, password: &str) -> String {
        let code = self.request_code(email).await;
        let resp = self
            .post_json(
                "/api/v1/user/signup/verify",
                serde_json::json!({ "email": email, "code": code, "password": password }),
            )
            .await;
        assert_eq!(resp.status(), 200);
        session_cookie(&resp, self.cookie_name()).expect("verify sets the session cookie")
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> String {
        let resp = self
            .post_json(
                "/api/v1/user/signin",
                serde_json::json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(resp.status(), 200);
        session_cookie(&resp, self.cookie_name()).expect("signin sets the session cookie")
    }

    /// `GET /api/v1/auth-check` with `cookie`; returns the JSON body.
    pub async fn auth_check(&self, cookie: &str) -> serde_json::Value {
        let resp = self.get_with_cookie("/api/v1/auth-check", cookie).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        self.stop_in_process();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(url) = self.own_database.take() {
            pg::drop_database(&url);
        }
    }
}

/// The `name=value` pair of the session cookie set by `resp`, if any.
pub fn session_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    set_cookie_header(resp, name).map(|h| h.split(';').next().unwrap().trim().to_string())
}

/// The whole `Set-Cookie` header for cookie `name`.
pub fn set_cookie_header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// The first word of exactly six digits in a mail body (MIME boundaries
/// mix letters and digits, so they never count).
pub fn extract_code(mail: &str) -> Option<String> {
    let body = mail
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n");
    body.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

/// `ADDR` from `scheme://ADDR…`, up to the first character that cannot be
/// part of an address (the text and JSON log formats end it differently).
fn address_after_scheme(text: &str) -> String {
    let after = text.split("://").nth(1).unwrap_or("");
    after
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c))
        .collect()
}

/// Runs the CLI with `--config config`; returns (success, stdout, stderr).
pub fn run_cli(config: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `toml` to a fresh file and runs the CLI on it (as [`run_cli`]).
pub fn run_cli_on(toml: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(&path, toml).unwrap();
    run_cli(&path, args, "")
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub async fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Gatehouse {
    /// Runs the server in-process on `clock` (see [`InProcess`]). No log
    /// lines are captured (the test process installs no subscriber), and
    /// the admin HTTP address is not known: tests in this mode assert on
    /// HTTP answers, mail and the CLI.
    fn spawn_in_process(&mut self, clock: gatehouse::Clock) {
        let (server, addr) = InProcess::start(&self.config_path, clock);
        self.addr = addr;
        self.admin_addr = None;
        self.in_process = Some(server);
    }

    fn stop_in_process(&mut self) {
        if let Some(server) = self.in_process.take() {
            server.stop();
        }
    }
}

impl InProcess {
    /// Runs the server through the library (`gatehouse::serve_with_clock`)
    /// on its own multi-threaded runtime and thread, with the configuration
    /// file the binary would read: the same real listener, TLS, upstream and
    /// SMTP, but every expiry decision on `clock`, which the test moves.
    /// Returns once the public listener is bound.
    pub fn start(config_path: &Path, clock: gatehouse::Clock) -> (InProcess, SocketAddr) {
        let config = gatehouse::Config::load(config_path)
            .unwrap_or_else(|e| panic!("test config refused: {e}"));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let shutdown = async {
                let _ = stopped.await;
            };
            let listening = {
                let addr_tx = addr_tx.clone();
                move |addr| {
                    let _ = addr_tx.send(Ok(addr));
                }
            };
            let outcome = runtime.block_on(gatehouse::serve_with_clock(
                config, shutdown, clock, listening,
            ));
            if let Err(e) = outcome {
                let _ = addr_tx.send(Err(e.to_string()));
            }
        });
        match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(addr)) => (InProcess { stop, thread }, addr),
            Ok(Err(e)) => panic!("in-process gatehouse did not start: {e}"),
            Err(_) => panic!("in-process gatehouse did not start within 20 s"),
        }
    }

    /// Shuts the server down (drain included) and waits, at most 15 s, for
    /// its thread, so a restart finds the store unlocked.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}
