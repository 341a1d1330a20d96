//! `[tls.acme]` without a CA: the configuration rules at start-up and in
//! `check-config`, and the stored certificate being served (or not) by the
//! real binary while the CA is unreachable. Issuance, renewal and CA
//! failures against a real ACME server are in `.ci/acme-pebble.sh`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestCa;

/// A port nothing listens on: the "CA" is unreachable.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Writes the test CA's localhost certificate and key where ACME keeps its
/// certificate (`<store dir>/acme/certificate.pem`).
fn store_certificate(data_dir: &Path, ca: &TestCa) {
    let acme = data_dir.join("acme");
    std::fs::create_dir_all(&acme).unwrap();
    let chain = std::fs::read_to_string(&ca.cert_path).unwrap();
    let key = std::fs::read_to_string(&ca.key_path).unwrap();
    std::fs::write(acme.join("certificate.pem"), format!("{chain}{key}")).unwrap();
}

fn acme_config(dir: &Path, domains: &str, ca_file: &Path) -> PathBuf {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"http://127.0.0.1:{up}\"\n\
         [store]\npath = \"{store}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [tls.acme]\ndomains = {domains}\ndirectory = \"https://127.0.0.1:{ca}/dir\"\n\
         ca_file = \"{ca_file}\"\nrenew_before = \"1d\"\n",
        up = closed_port(),
        store = dir.join("data/gatehouse.redb").display(),
        ca = closed_port(),
        ca_file = ca_file.display(),
    );
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The binary serving `config`, its log collected.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(config: &Path) -> Server {
        Server::start_with_env(config, &[])
    }

    fn start_with_env(config: &Path, env: &[(&str, &Path)]) -> Server {
        let mut child = Command::new(common::binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (needle, kind) in [
                    ("admin endpoints on http://", 0),
                    ("listening on https://", 1),
                ] {
                    if let Some(rest) = line.split(needle).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send((kind, addr.to_string()));
                    }
                }
                seen.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let (kind, text) = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("gatehouse did not start: {:?}", logs.lock().unwrap()));
            let parsed: SocketAddr = text.parse().unwrap();
            if kind == 0 {
                admin = Some(parsed);
            } else {
                addr = Some(parsed);
            }
        }
        Server {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            logs,
        }
    }

    fn log_count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    async fn wait_for_log(&self, needle: &str) {
        let found = common::eventually(Duration::from_secs(20), || {
            (self.log_count(needle) > 0).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "no log line with {needle:?}: {:?}",
            self.logs.lock().unwrap()
        );
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::Client::new()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// The DER of the certificate served for `localhost`, or the handshake error.
    async fn served(&self, ca: &TestCa) -> Result<Vec<u8>, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(&[b"h2"])));
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leaf_der(ca: &TestCa) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(&ca.cert_path)
        .unwrap()
        .to_vec()
}

fn ca_file(dir: &Path, ca: &TestCa) -> PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, &ca.ca_pem).unwrap();
    path
}

#[tokio::test]
async fn a_stored_valid_certificate_is_served_without_asking_the_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    store_certificate(&dir.path().join("data"), &ca);
    let config = acme_config(dir.path(), "[\"localhost\"]", &ca_file(dir.path(), &ca));
    let server = Server::start(&config);

    assert_eq!(server.served(&ca).await.unwrap(), leaf_der(&ca));
    server
        .wait_for_log("ACME certificate valid; no order needed until renewal")
        .await;
    // The CA is unreachable: any attempt to order would have failed loudly.
    assert_eq!(server.log_count("ordering a certificate"), 0);
    assert_eq!(server.log_count("ERROR"), 0);
    let (_, body) = server.admin_get("/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["certificate"], "ok", "{body}");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("gatehouse_acme_order_failures_total 0"),
        "{metrics}"
    );
    let expiry = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_tls_certificate_expiry_seconds "))
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap();
    assert!(expiry > 0, "{metrics}");
}

#[tokio::test]
async fn without_a_certificate_for_the_names_handshakes_fail_and_readiness_waits() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    // A stored certificate that does not cover the configured name.
    store_certificate(&dir.path().join("data"), &ca);
    let config = acme_config(
        dir.path(),
        "[\"app.example.com\"]",
        &ca_file(dir.path(), &ca),
    );
    let server = Server::start(&config);

    server
        .wait_for_log("ACME order failed; no certificate yet")
        .await;
    assert_eq!(
        server.log_count("the stored certificate does not cover app.example.com"),
        1
    );
    let e = server.served(&ca).await.unwrap_err();
    assert!(e.to_lowercase().contains("alert"), "{e}");
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["certificate"], "waiting", "{body}");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("gatehouse_tls_certificate_expiry_seconds 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("gatehouse_acme_order_failures_total 0"),
        "{metrics}"
    );

    // SIGHUP (systemctl reload) retries now instead of after the back-off.
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(killed.success());
    server
        .wait_for_log("SIGHUP: retrying the ACME order now")
        .await;
    server.wait_for_log("attempt=2").await;
}

/// Notification datagrams received so far (non-blocking drain).
fn notifications(sock: &UnixDatagram) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    seen
}

fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_nonblocking(true).unwrap();
    (sock, path)
}

#[tokio::test]
async fn systemd_hears_ready_only_once_a_certificate_serves() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let is_ready = |seen: &[String]| seen.iter().any(|m| m.lines().any(|l| l == "READY=1"));

    // No certificate for the names and the CA unreachable: never ready.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    let config = acme_config(
        dir.path(),
        "[\"app.example.com\"]",
        &ca_file(dir.path(), &ca),
    );
    let (sock, path) = notify_socket(dir.path());
    let server = Server::start_with_env(&config, &[("NOTIFY_SOCKET", &path)]);
    server
        .wait_for_log("ACME order failed; no certificate yet")
        .await;
    let seen = notifications(&sock);
    assert!(!is_ready(&seen), "READY=1 without a certificate: {seen:?}");
    drop(server);

    // A stored certificate that covers the name: ready at once.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(dir.path());
    store_certificate(&dir.path().join("data"), &ca);
    let config = acme_config(dir.path(), "[\"localhost\"]", &ca_file(dir.path(), &ca));
    let (sock, path) = notify_socket(dir.path());
    let _server = Server::start_with_env(&config, &[("NOTIFY_SOCKET", &path)]);
    let ready = common::eventually(Duration::from_secs(20), || {
        is_ready(&notifications(&sock)).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "no READY=1 with a valid stored certificate"
    );
}

fn run(args: &[&str], config: &Path) -> (bool, String) {
    let (ok, _, stderr) = common::run_cli(config, args, "");
    (ok, stderr)
}

#[test]
fn acme_and_certificate_files_exclude_each_other_at_start_up_and_in_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("g.toml");
    for tls in [
        "self_signed = true\n",
        "cert = \"/etc/c.pem\"\nkey = \"/etc/k.pem\"\n",
    ] {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\n{tls}[tls.acme]\ndomains = [\"a.example.com\"]\n"
            ),
        )
        .unwrap();
        for cmd in ["serve", "check-config"] {
            let (ok, stderr) = run(&[cmd], &config);
            assert!(!ok, "{cmd} accepted {tls:?}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains("tls.acme") && stderr.contains("excludes"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn check_config_reports_an_unusable_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let config = acme_config(dir.path(), "[\"localhost\"]", &missing);
    let (ok, stderr) = run(&["check-config"], &config);
    assert!(!ok);
    assert!(stderr.contains("tls.acme.ca_file"), "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
    // The valid form passes.
    let ca = TestCa::create(dir.path());
    let config = acme_config(dir.path(), "[\"localhost\"]", &ca_file(dir.path(), &ca));
    let (ok, stderr) = run(&["check-config"], &config);
    assert!(ok, "{stderr}");
}
