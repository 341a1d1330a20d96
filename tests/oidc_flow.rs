//! Sign-in through a real OpenID Provider on loopback: npm `oidc-provider`
//! (a certified OP, `tests/oidc/provider.mjs`) served over TLS with a test
//! CA, driven by a real HTTP client (reqwest with a cookie jar) that follows
//! every redirect: Gatehouse's connect answer → the provider's login and
//! consent forms → Gatehouse's callback → the frontend page (proxied to the
//! recording upstream).
//!
//! The token-level attacks the certified provider cannot be made to commit
//! (wrong nonce, expired token, another key, another audience/issuer, an
//! unsigned token) come from `tests/oidc/fake-op.mjs`, a small real HTTPS
//! provider that misbehaves on request; it also rotates its key.
//!
//! These tests need Node.js and `npm ci` in tests/oidc; `.ci/oidc.sh` sets
//! that up and runs them with `GATEHOUSE_OIDC_TESTS=1`. With the variable
//! set, a missing provider FAILS the tests; without it they return at once
//! (so `cargo test` passes on a machine without Node).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{RecordingUpstream, SmtpSink, TestCa, run_cli};
use reqwest::cookie::{CookieStore, Jar};

fn enabled() -> bool {
    match std::env::var("GATEHOUSE_OIDC_TESTS") {
        Ok(v) if v == "1" => true,
        _ => {
            eprintln!("GATEHOUSE_OIDC_TESTS is not 1: OIDC flow tests not run (see .ci/oidc.sh)");
            false
        }
    }
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// A Node OpenID provider process; killed on drop.
struct NodeOp {
    issuer: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl NodeOp {
    /// Starts `script` with the test certificate; for provider.mjs, the
    /// redirect URIs are sent once known (see [`NodeOp::register`]).
    fn start(script: &str, ca: &TestCa) -> NodeOp {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "GATEHOUSE_OIDC_TESTS=1 but {}/node_modules is missing: run `npm ci` there (.ci/oidc.sh does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .arg(&ca.cert_path)
            .arg(&ca.key_path)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("GATEHOUSE_OIDC_TESTS=1 but node cannot start: {e}"));
        let stdin = child.stdin.take();
        let mut op = NodeOp {
            issuer: String::new(),
            child,
            stdin,
        };
        let line = op.read_line();
        op.issuer = line["issuer"]
            .as_str()
            .expect("the provider prints its issuer")
            .to_string();
        op
    }

    fn read_line(&mut self) -> serde_json::Value {
        let stdout = self.child.stdout.as_mut().unwrap();
        let mut line = String::new();
        // One line per call; the process exits if it cannot start.
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).unwrap();
        serde_json::from_str(line.trim())
            .unwrap_or_else(|_| panic!("provider did not start (printed {line:?})"))
    }

    /// Registers Gatehouse's callback URLs with the certified provider.
    fn register(&mut self, redirect_uris: &[String]) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "{}",
            serde_json::json!({ "redirect_uris": redirect_uris })
        )
        .unwrap();
        stdin.flush().unwrap();
        let ready = self.read_line();
        assert_eq!(ready["ready"], true);
    }
}

impl Drop for NodeOp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Gatehouse whose config names OIDC providers. Its callback URLs must be
/// known before it starts, so the port is chosen first (bind :0, release).
struct Gate {
    _dir: tempfile::TempDir,
    config_path: PathBuf,
    port: u16,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    upstream: RecordingUpstream,
    /// What Gatehouse mailed (sign-in notices).
    smtp: SmtpSink,
    /// Set by [`Gate::start_in_process`]: the server runs in this process
    /// on a manual clock the test moves.
    in_process: Option<(common::InProcess, gatehouse::Clock)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Gate {
    fn callback(port: u16, name: &str) -> String {
        format!("https://localhost:{port}/api/v1/oauth/{name}/callback")
    }

    async fn start(dir: tempfile::TempDir, ca: &TestCa, port: u16, oidc_toml: &str) -> Gate {
        let mut gate = Gate::configure(dir, ca, port, oidc_toml, "").await;
        let (child, logs) = spawn_gatehouse(&gate.config_path);
        gate.child = Some(child);
        gate.logs = logs;
        gate
    }

    /// Like [`Gate::start`], but in-process on a manual clock (see
    /// `common::InProcess`); move it with [`Gate::advance`]. Its log is empty.
    async fn start_in_process(
        dir: tempfile::TempDir,
        ca: &TestCa,
        port: u16,
        oidc_toml: &str,
    ) -> Gate {
        // No sweep while the test runs: an expired state stays stored, so
        // its callback is answered `expired_state`, not `invalid_state`.
        let no_sweep = "sweep_interval = \"1h\"\n";
        let mut gate = Gate::configure(dir, ca, port, oidc_toml, no_sweep).await;
        let clock = gatehouse::Clock::manual();
        let (server, _) = common::InProcess::start(&gate.config_path, clock);
        gate.in_process = Some((server, clock));
        gate
    }

    fn advance(&self, by: Duration) {
        let (_, clock) = self.in_process.as_ref().expect("started in-process");
        assert!(clock.advance(by));
    }

    /// Writes the configuration; nothing runs yet.
    async fn configure(
        dir: tempfile::TempDir,
        ca: &TestCa,
        port: u16,
        oidc_toml: &str,
        store_extra: &str,
    ) -> Gate {
        let upstream = RecordingUpstream::start().await;
        let smtp = SmtpSink::start().await;
        let ca_file = dir.path().join("test-ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 2\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             [upstream]\nurl = \"http://{up}\"\n\
             [store]\npath = \"{store}\"\n{store_extra}\
             [mail]\ntransport = \"smtp\"\nfrom = \"Flowtask <no-reply@example.com>\"\n\
             [mail.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
             [session]\ncookie_name = \"sid\"\n\
             [limits]\nsignin_per_ip_per_minute = 1000\n\
             [admin]\nlisten = \"off\"\nsocket = \"{sock}\"\n\
             [[route]]\nprefix = \"/api/v2/\"\nauth = \"required\"\n\
             [[route]]\nprefix = \"/\"\nauth = \"optional\"\n\
             {oidc}",
            cert = ca.cert_path.display(),
            key = ca.key_path.display(),
            up = upstream.addr,
            smtp = smtp.addr.port(),
            store = dir.path().join("data/gatehouse.redb").display(),
            sock = dir.path().join("admin.sock").display(),
            oidc = oidc_toml.replace("CA_FILE", &ca_file.display().to_string()),
        );
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, config).unwrap();
        Gate {
            _dir: dir,
            config_path,
            port,
            child: None,
            logs: Arc::default(),
            upstream,
            smtp,
            in_process: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Kills the server (SIGKILL) and starts it again on the same store
    /// and port.
    fn kill_and_restart(&mut self) {
        let mut child = self.child.take().expect("a spawned server");
        let _ = child.kill();
        let _ = child.wait();
        let (child, logs) = spawn_gatehouse(&self.config_path);
        self.child = Some(child);
        self.logs = logs;
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        run_cli(&self.config_path, args, "")
    }
}

/// Starts the binary and waits for its "listening" line.
fn spawn_gatehouse(config_path: &Path) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(common::binary())
        .args(["serve", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening on ") {
                let _ = tx.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        panic!(
            "gatehouse did not start; log:\n{}",
            logs.lock().unwrap().join("\n")
        );
    }
    (child, logs)
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((server, _)) = self.in_process.take() {
            server.stop();
        }
    }
}

/// A browser stand-in: one cookie jar for Gatehouse and the provider,
/// redirects followed, offering HTTP/2 and HTTP/1.1 like a browser (so
/// Gatehouse is spoken to over h2; the Node provider answers HTTP/1.1).
struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    fn new(ca: &TestCa) -> Browser {
        Browser::with_agent(ca, "OidcFlowTest/1.0")
    }

    /// A browser that names itself `user_agent` (as sign-in notices show).
    fn with_agent(ca: &TestCa, user_agent: &str) -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .tls_backend_preconfigured(ca.client_config(&[b"h2", b"http/1.1"]))
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::limited(20))
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser { client, jar }
    }

    /// `GET connect`; returns the JSON answer.
    async fn connect(&self, gate: &Gate, name: &str, query: &str) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .get(gate.url(&format!("/api/v1/oauth/{name}/connect{query}")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Follows `auth_url` through the provider's login (as `login`) and
    /// consent forms; returns the final response (after Gatehouse's callback
    /// redirect) — or the callback's own redirect if `stop_at_callback`.
    async fn through_provider(&self, auth_url: &str, login: &str) -> reqwest::Response {
        let mut resp = self.client.get(auth_url).send().await.unwrap();
        for _ in 0..4 {
            let url = resp.url().clone();
            if !url.path().starts_with("/interaction/") {
                return resp;
            }
            let html = resp.text().await.unwrap();
            let body = if html.contains("name=\"login\"") {
                format!("prompt=login&login={}&password=anything", enc(login))
            } else {
                "prompt=consent".to_string()
            };
            resp = self
                .client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
        }
        panic!("the provider kept asking for interaction");
    }

    /// A whole sign-in; returns where the browser landed (path and query).
    async fn sign_in(&self, gate: &Gate, name: &str, login: &str) -> String {
        let (status, body) = self.connect(gate, name, "").await;
        assert_eq!(status, 200, "{body}");
        let resp = self
            .through_provider(body["authUrl"].as_str().unwrap(), login)
            .await;
        landed(&resp)
    }

    async fn auth_check(&self, gate: &Gate) -> serde_json::Value {
        self.client
            .get(gate.url("/api/v1/auth-check"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn cookie_for(&self, gate: &Gate, name: &str) -> Option<String> {
        let url = gate.url("/").parse().unwrap();
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|c| c.strip_prefix(&format!("{name}=")).map(str::to_string))
    }
}

fn subject(mail: &str) -> String {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string()
}

fn landed(resp: &reqwest::Response) -> String {
    let url = resp.url();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn provider_toml(name: &str, issuer: &str, port: u16, extra: &str) -> String {
    format!(
        "[[oidc]]\nname = \"{name}\"\nissuer = \"{issuer}\"\nclient_id = \"gatehouse\"\n\
         client_secret = \"gatehouse-secret\"\nredirect_url = \"{}\"\nca_file = \"CA_FILE\"\n{extra}\n",
        Gate::callback(port, name)
    )
}

#[tokio::test]
async fn certified_provider_sign_in_link_refusals_and_logout() {
    if !enabled() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let mut op = NodeOp::start("provider.mjs", &ca);
    let port = free_port();
    op.register(&[
        Gate::callback(port, "op"),
        Gate::callback(port, "corp"),
        Gate::callback(port, "closed"),
    ]);
    let oidc = format!(
        "{}{}{}",
        provider_toml("op", &op.issuer, port, ""),
        provider_toml(
            "corp",
            &op.issuer,
            port,
            "allowed_domains = [\"corp.example\"]"
        ),
        provider_toml("closed", &op.issuer, port, "create_users = false"),
    );
    let gate = Gate::start(dir, &ca, port, &oidc).await;

    // The connect answer's shape, and its cookie.
    let browser = Browser::new(&ca);
    let h2 = browser
        .client
        .get(gate.url("/api/v1/auth-check"))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let (status, body) = browser.connect(&gate, "op", "").await;
    assert_eq!(status, 200, "{body}");
    let auth_url = body["authUrl"].as_str().unwrap();
    let state = body["state"].as_str().unwrap();
    assert!(
        auth_url.starts_with(&format!("{}/auth?", op.issuer)),
        "{auth_url}"
    );
    for part in [
        "code_challenge_method=S256",
        "response_type=code",
        "client_id=gatehouse",
        &format!("state={state}"),
        "nonce=",
        "code_challenge=",
    ] {
        assert!(auth_url.contains(part), "{part} missing from {auth_url}");
    }
    assert!(browser.cookie_for(&gate, "__Host-gatehouse-oidc").is_some());

    // 1. A new user: account created, new_user_path, a working session.
    let landed_at = browser
        .through_provider(auth_url, "new.user@example.com")
        .await;
    assert_eq!(landed(&landed_at), "/onboarding/welcome", "{}", gate.logs());
    let check = browser.auth_check(&gate).await;
    assert_eq!(check["isAuthenticated"], true);
    assert_eq!(check["email"], "new.user@example.com");
    // The session passes a required route; the upstream sees who it is.
    let proxied = browser
        .client
        .get(gate.url("/api/v2/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    assert_eq!(
        gate.upstream.last().headers["x-auth-email"],
        "new.user@example.com"
    );
    // The binding cookie is gone after the callback.
    assert!(browser.cookie_for(&gate, "__Host-gatehouse-oidc").is_none());

    // The OIDC-created account has no password: a password sign-in fails
    // exactly like a wrong password for a password account.
    let (ok, out, err) = gate.cli(&[
        "user",
        "add",
        "pw.user@example.com",
        "--password",
        "password1",
    ]);
    assert!(ok, "{out}{err}");
    let signin = |email: &'static str| {
        let client = browser.client.clone();
        let url = gate.url("/api/v1/user/signin");
        async move {
            let resp = client
                .post(url)
                .json(&serde_json::json!({ "email": email, "password": "not-the-password" }))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let oidc_only = signin("new.user@example.com").await;
    let wrong_pw = signin("pw.user@example.com").await;
    assert_eq!(oidc_only.0, 400);
    assert_eq!(oidc_only, wrong_pw);
    // Empty password is refused before any lookup, for both alike.
    // (And the session is still valid: a failed sign-in does not end it.)

    // Logout works as for any session.
    let out = browser
        .client
        .post(gate.url("/api/v1/user/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(browser.auth_check(&gate).await["isAuthenticated"], false);
    let after = browser
        .client
        .get(gate.url("/api/v2/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);

    // 2. An existing password account with the same verified email: linked,
    // success_path; the CLI shows the link; later sign-ins find it by subject.
    let fresh = Browser::with_agent(&ca, "FreshBrowser/2.0");
    assert_eq!(
        fresh.sign_in(&gate, "op", "pw.user@example.com").await,
        "/app/today"
    );
    assert_eq!(
        fresh.auth_check(&gate).await["email"],
        "pw.user@example.com"
    );
    // A browser this account never used: the new-sign-in notice, through
    // the outbox, as a password sign-in sends it (the account was added by
    // the CLI, so this is its first mail).
    let notice = gate.smtp.wait_for_nth("pw.user@example.com", 1).await;
    assert!(subject(&notice).contains("New sign-in"), "{notice}");
    assert!(notice.contains("FreshBrowser/2.0"), "{notice}");
    assert!(notice.contains("127.0.0.1"), "{notice}");
    // The same browser again (its device cookie is known): no notice. The
    // password sign-in from another browser below is mail #2, and only it.
    assert_eq!(
        fresh.sign_in(&gate, "op", "pw.user@example.com").await,
        "/app/today"
    );
    let (ok, shown, err) = gate.cli(&["user", "show", "pw.user@example.com", "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["identities"][0]["provider"], "op");
    assert_eq!(shown["identities"][0]["subject"], "pw.user@example.com");
    assert_eq!(shown["identities"][0]["issuer"], op.issuer.as_str());
    // The password still works after linking.
    let with_pw = browser
        .client
        .post(gate.url("/api/v1/user/signin"))
        .json(&serde_json::json!({ "email": "pw.user@example.com", "password": "password1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(with_pw.status(), 200);
    let second = gate.smtp.wait_for_nth("pw.user@example.com", 2).await;
    assert!(subject(&second).contains("New sign-in"), "{second}");
    assert!(!second.contains("FreshBrowser/2.0"), "{second}");
    assert_eq!(gate.smtp.count_to("pw.user@example.com"), 2);
    assert_eq!(
        Browser::new(&ca)
            .sign_in(&gate, "op", "pw.user@example.com")
            .await,
        "/app/today"
    );

    // Unlink through the CLI; the next sign-in links again by verified email.
    let (ok, _, err) = gate.cli(&["user", "unlink", "pw.user@example.com", "op"]);
    assert!(ok, "{err}");
    let (ok, _, err) = gate.cli(&["user", "unlink", "pw.user@example.com", "op"]);
    assert!(!ok && err.contains("not linked"), "{err}");
    let (_, shown, _) = gate.cli(&["user", "show", "pw.user@example.com", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["identities"].as_array().unwrap().len(), 0);

    // 3. Unverified email: refused, no account, no session.
    let b = Browser::new(&ca);
    assert_eq!(
        b.sign_in(&gate, "op", "unverified+mallory@example.com")
            .await,
        "/signin?error=oauth_failed"
    );
    assert_eq!(b.auth_check(&gate).await["isAuthenticated"], false);
    let (ok, _, _) = gate.cli(&["user", "show", "mallory@example.com"]);
    assert!(!ok, "no account may be created for an unverified email");
    // ... and an unverified email matching an existing account is not linked.
    // (A fresh browser each time: the provider remembers who signed in.)
    let b = Browser::new(&ca);
    assert_eq!(
        b.sign_in(&gate, "op", "unverified+pw.user@example.com")
            .await,
        "/signin?error=oauth_failed"
    );
    assert_eq!(b.auth_check(&gate).await["isAuthenticated"], false);

    // 4. allowed_domains: outside refused, inside accepted.
    let b = Browser::new(&ca);
    assert_eq!(
        b.sign_in(&gate, "corp", "someone@example.com").await,
        "/signin?error=oauth_failed"
    );
    assert_eq!(b.auth_check(&gate).await["isAuthenticated"], false);
    let b = Browser::new(&ca);
    assert_eq!(
        b.sign_in(&gate, "corp", "worker@corp.example").await,
        "/onboarding/welcome"
    );
    assert_eq!(b.auth_check(&gate).await["email"], "worker@corp.example");

    // 5. create_users = false: no account for a stranger; an existing one links.
    let b = Browser::new(&ca);
    assert_eq!(
        b.sign_in(&gate, "closed", "stranger@example.com").await,
        "/signin?error=oauth_failed"
    );
    let b = Browser::new(&ca);
    assert_eq!(
        b.sign_in(&gate, "closed", "pw.user@example.com").await,
        "/app/today"
    );

    // 6. callbackUrl: honoured when it is a local path ...
    let b = Browser::new(&ca);
    let (status, body) = b
        .connect(&gate, "op", "?callbackUrl=%2Fprojects%2F42%3Ftab%3Dboard")
        .await;
    assert_eq!(status, 200, "{body}");
    let resp = b
        .through_provider(body["authUrl"].as_str().unwrap(), "new.user@example.com")
        .await;
    assert_eq!(landed(&resp), "/projects/42?tab=board");
    // ... and every open-redirect spelling is refused before anything starts.
    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "%2F%2Fevil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "///evil.example",
        "/%0d%0aSet-Cookie:x=1",
    ] {
        let (status, body) = b
            .connect(&gate, "op", &format!("?callbackUrl={}", enc(evil)))
            .await;
        assert_eq!(status, 400, "{evil}: {body}");
        assert!(body["message"].as_str().unwrap().contains("callbackUrl"));
    }

    // Two sign-ins started in one browser (two tabs, or a double click):
    // the first one still finishes — the browser keeps one binding.
    let b = Browser::new(&ca);
    let (_, first) = b.connect(&gate, "op", "").await;
    let binding = b.cookie_for(&gate, "__Host-gatehouse-oidc").unwrap();
    let (_, second) = b.connect(&gate, "op", "").await;
    assert_ne!(first["state"], second["state"]);
    assert_eq!(
        b.cookie_for(&gate, "__Host-gatehouse-oidc").unwrap(),
        binding
    );
    let resp = b
        .through_provider(first["authUrl"].as_str().unwrap(), "new.user@example.com")
        .await;
    assert_eq!(landed(&resp), "/app/today");
    // The binding is dropped once signed in.
    assert!(b.cookie_for(&gate, "__Host-gatehouse-oidc").is_none());

    // 7. The provider answers access_denied (the user cancelled).
    let b = Browser::new(&ca);
    let (_, body) = b.connect(&gate, "op", "").await;
    let first = b
        .client
        .get(body["authUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(first.url().path().starts_with("/interaction/"));
    let abort = format!("{}/abort", first.url());
    let resp = b.client.get(abort).send().await.unwrap();
    assert_eq!(landed(&resp), "/signin?error=access_denied");

    // 8. State handling: stop at the callback and replay or tamper with it.
    let b = Browser::new(&ca);
    let no_follow = reqwest::Client::builder()
        .tls_backend_preconfigured(ca.client_config(&[b"h2", b"http/1.1"]))
        .cookie_provider(b.jar.clone())
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path().ends_with("/callback") {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    let callback_url =
        |resp: &reqwest::Response| resp.headers()["location"].to_str().unwrap().to_string();
    let redirect_of = |resp: reqwest::Response| {
        assert_eq!(resp.status(), 302);
        resp.headers()["location"].to_str().unwrap().to_string()
    };
    // Follows everything up to (not into) Gatehouse's callback; returns the
    // provider's redirect to it.
    let stop_at_callback = |no_follow: &reqwest::Client, auth_url: String| {
        let no_follow = no_follow.clone();
        async move {
            let mut resp = no_follow.get(&auth_url).send().await.unwrap();
            for _ in 0..4 {
                if resp.status().is_redirection() {
                    return resp;
                }
                let url = resp.url().clone();
                let html = resp.text().await.unwrap();
                let body = if html.contains("name=\"login\"") {
                    "prompt=login&login=new.user%40example.com&password=x"
                } else {
                    "prompt=consent"
                };
                resp = no_follow
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
            }
            panic!("the provider never redirected to the callback");
        }
    };
    let (_, body) = b.connect(&gate, "op", "").await;
    let at_callback = stop_at_callback(&no_follow, body["authUrl"].as_str().unwrap().into()).await;
    let callback = callback_url(&at_callback);
    assert!(
        callback.contains("/api/v1/oauth/op/callback?"),
        "{callback}"
    );
    let binding = b.cookie_for(&gate, "__Host-gatehouse-oidc").unwrap();
    let plain = reqwest::Client::builder()
        .tls_backend_preconfigured(ca.client_config(&[b"h2", b"http/1.1"]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let call = |url: String, cookie: Option<String>| {
        let plain = plain.clone();
        async move {
            let mut req = plain.get(url);
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            req.send().await.unwrap()
        }
    };
    // Tampered binding cookie: refused (and the state is used up).
    let tampered = call(
        callback.clone(),
        Some(format!("__Host-gatehouse-oidc={binding}x")),
    )
    .await;
    assert_eq!(redirect_of(tampered), "/signin?error=invalid_state");
    // The same callback with the right cookie is now a replay: refused.
    let replay = call(
        callback.clone(),
        Some(format!("__Host-gatehouse-oidc={binding}")),
    )
    .await;
    assert_eq!(redirect_of(replay), "/signin?error=invalid_state");

    // A good callback works once, then its replay is refused.
    let (_, body) = b.connect(&gate, "op", "").await;
    let at_callback = stop_at_callback(&no_follow, body["authUrl"].as_str().unwrap().into()).await;
    let callback = callback_url(&at_callback);
    let binding = b.cookie_for(&gate, "__Host-gatehouse-oidc").unwrap();
    let cookie = format!("__Host-gatehouse-oidc={binding}");
    let first = call(callback.clone(), Some(cookie.clone())).await;
    let set_cookies: Vec<String> = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(redirect_of(first), "/app/today");
    assert!(
        set_cookies.iter().any(|c| c.starts_with("__Host-sid=")),
        "{set_cookies:?}"
    );
    let again = call(callback.clone(), Some(cookie.clone())).await;
    assert_eq!(redirect_of(again), "/signin?error=invalid_state");
    // No binding cookie at all.
    let (_, body) = b.connect(&gate, "op", "").await;
    let at_callback = stop_at_callback(&no_follow, body["authUrl"].as_str().unwrap().into()).await;
    let missing = call(callback_url(&at_callback), None).await;
    assert_eq!(redirect_of(missing), "/signin?error=invalid_state");
    // An unknown state, and a callback without a code.
    let unknown = call(
        gate.url("/api/v1/oauth/op/callback?code=abc&state=never-issued"),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(redirect_of(unknown), "/signin?error=invalid_state");
    let no_code = call(gate.url("/api/v1/oauth/op/callback?state=x"), None).await;
    assert_eq!(redirect_of(no_code), "/signin?error=missing_code");
    // Unknown provider: connect is a JSON 404.
    let (status, body) = b.connect(&gate, "nope", "").await;
    assert_eq!(status, 404, "{body}");

    // The reasons are logged, tokens are not.
    let logs = gate.logs();
    for reason in [
        "does not say the email is verified",
        "allowed_domains",
        "create_users = false",
        "error=access_denied",
        "binding cookie missing or wrong",
    ] {
        assert!(
            logs.contains(reason),
            "no log line with {reason:?}:\n{logs}"
        );
    }
    assert!(!logs.contains(&binding), "a binding value was logged");
    assert!(
        !logs.contains("eyJ"),
        "something JWT-shaped was logged:\n{logs}"
    );
}

/// The provider's misbehaviour for the next token; checked by the provider.
async fn set_mode(client: &reqwest::Client, issuer: &str, mode: &str) {
    let resp = client
        .get(format!("{issuer}/mode?m={mode}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn forged_and_broken_id_tokens_are_refused() {
    if !enabled() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let op = NodeOp::start("fake-op.mjs", &ca);
    let port = free_port();
    let gate = Gate::start(dir, &ca, port, &provider_toml("fake", &op.issuer, port, "")).await;
    let b = Browser::new(&ca);

    // The well-behaved case first: there were successes to compare with.
    set_mode(&b.client, &op.issuer, "ok").await;
    assert_eq!(
        b.sign_in(&gate, "fake", "").await,
        "/onboarding/welcome",
        "{}",
        gate.logs()
    );
    // A rotated key: unknown to the cached key set, found after a refresh.
    set_mode(&b.client, &op.issuer, "rotate").await;
    assert_eq!(
        b.sign_in(&gate, "fake", "").await,
        "/onboarding/welcome",
        "{}",
        gate.logs()
    );
    assert!(gate.logs().contains("key set refreshed"));

    for mode in [
        "wrong-nonce",
        "expired",
        "other-key",
        "unknown-kid",
        "wrong-aud",
        "wrong-iss",
        "alg-none",
    ] {
        let b = Browser::new(&ca);
        set_mode(&b.client, &op.issuer, mode).await;
        assert_eq!(
            b.sign_in(&gate, "fake", "").await,
            "/signin?error=oauth_failed",
            "{mode}"
        );
        assert_eq!(
            b.auth_check(&gate).await["isAuthenticated"],
            false,
            "{mode}"
        );
    }
    let logs = gate.logs();
    assert!(logs.contains("ID token rejected"), "{logs}");
    assert!(
        !logs.contains("eyJ"),
        "something JWT-shaped was logged:\n{logs}"
    );
    // Back to good behaviour: the provider is still usable.
    set_mode(&b.client, &op.issuer, "ok").await;
    assert_eq!(b.sign_in(&gate, "fake", "").await, "/onboarding/welcome");

    // A sign-in started before a crash finishes after it: the state is in
    // the store, not in memory.
    let mut gate = gate;
    let b = Browser::new(&ca);
    let (status, body) = b.connect(&gate, "fake", "").await;
    assert_eq!(status, 200, "{body}");
    gate.kill_and_restart();
    let resp = b
        .client
        .get(body["authUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(landed(&resp), "/onboarding/welcome", "{}", gate.logs());
    assert_eq!(b.auth_check(&gate).await["isAuthenticated"], true);
}

#[tokio::test]
async fn an_expired_state_is_refused_with_expired_state() {
    if !enabled() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let op = NodeOp::start("fake-op.mjs", &ca);
    let port = free_port();
    let toml = format!(
        "{}[oauth]\nstate_ttl = \"10m\"\n",
        provider_toml("fake", &op.issuer, port, "")
    );
    let gate = Gate::start_in_process(dir, &ca, port, &toml).await;
    let b = Browser::new(&ca);
    let (status, body) = b.connect(&gate, "fake", "").await;
    assert_eq!(status, 200, "{body}");
    // Move the server's clock past the state's lifetime.
    gate.advance(Duration::from_secs(11 * 60));
    let resp = b
        .client
        .get(body["authUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        landed(&resp),
        "/signin?error=expired_state",
        "{}",
        gate.logs()
    );
    // A fresh one, used at once, works.
    let (_, body) = b.connect(&gate, "fake", "").await;
    let resp = b
        .client
        .get(body["authUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(landed(&resp), "/onboarding/welcome");
}
