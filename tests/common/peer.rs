//! A second gatehouse process on a copy of another's configuration (its
//! own admin socket), sharing the upstream, the mailbox and the store: for
//! several instances on one PostgreSQL database.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Gatehouse;

/// A second instance sharing A's configuration (and so its database).
pub struct Peer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Starts B on A's configuration with its own admin socket; `edit` may
    /// change the text further (e.g. the SMTP port).
    pub fn start(a: &Gatehouse, edit: impl FnOnce(String) -> String) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = std::fs::read_to_string(&a.config_path).unwrap();
        // The generated file ends with the [admin] table.
        config.push_str(&format!(
            "socket = \"{}\"\n",
            dir.path().join("admin.sock").display()
        ));
        let config = edit(config);
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut peer = Peer {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            config_path,
            logs: Arc::new(Mutex::new(Vec::new())),
            _dir: dir,
        };
        peer.spawn();
        peer
    }

    pub fn spawn(&mut self) {
        let mut child = Command::new(super::binary())
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = self.logs.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || ".:".contains(*c))
                        .collect();
                    let _ = tx.send(addr);
                }
                logs.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "peer did not start:\n{}",
                    self.logs.lock().unwrap().join("\n")
                )
            });
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Peer {
    /// The server's log so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain-HTTP client keeping no cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn post(url: String, body: serde_json::Value, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client().post(url).json(&body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

pub async fn status_of(url: String, cookie: &str) -> u16 {
    client()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
