//! `mesh up --ui`: the live page, read by a real browser (Debian's headless Chromium driven over
//! WebDriver by chromedriver), while the mesh is steered from another terminal.

mod common;

use common::{http, steered, tool, Mesh, BIN};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the page has to show what the mesh did.
const SHOW_WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a loopback port, and one headless Chromium session through it.
struct Browser {
    driver: Child,
    client: Client,
    rt: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // Ready once it says so (it prints one line when it listens).
        let (tx, ready) = std::sync::mpsc::channel();
        let out = driver.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver said it started");
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut caps = serde_json::Map::new();
        // As root in a closed network: no sandbox, and none of Chromium's own connections.
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1360,1500",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a Chromium session");
        // `until` waits in the page for as long as SHOW_WAIT: the script timeout must be longer.
        let script = SHOW_WAIT + Duration::from_secs(30);
        rt.block_on(
            client.update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(script),
                None,
                None,
            )),
        )
        .expect("the script timeout is set");
        Browser {
            driver,
            client,
            rt,
            _profile: profile,
        }
    }

    fn open(&self, url: &str) {
        self.rt
            .block_on(self.client.goto(url))
            .expect("the page opens");
    }

    /// Runs `script` in the page (its `return` value).
    fn eval(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client.execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `script` returns something truthy in the page; returns it. The page waits on
    /// its own DOM's changes (a MutationObserver) and answers at the first one that makes
    /// `script` true, or with null after SHOW_WAIT.
    fn until(&self, what: &str, script: &str) -> Value {
        // Once in the open: a script that does not run fails here, with its error.
        self.eval(script);
        let waiting = format!(
            r#"const done = arguments[arguments.length - 1];
            const check = () => {{ try {{ return (() => {{ {script} }})() || null; }} catch (e) {{ return null; }} }};
            const now = check();
            if (now) {{ done(now); return; }}
            const seen = new MutationObserver(() => {{
                const got = check();
                if (got) {{ seen.disconnect(); clearTimeout(deadline); done(got); }}
            }});
            seen.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
            const deadline = setTimeout(() => {{ seen.disconnect(); done(null); }}, {ms});"#,
            ms = SHOW_WAIT.as_millis()
        );
        let got = self
            .rt
            .block_on(self.client.execute_async(&waiting, Vec::new()))
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        assert!(
            !got.is_null(),
            "the page did not show {what} within {SHOW_WAIT:?}; it shows: {}",
            self.eval("return document.body.innerText")
        );
        got
    }

    fn screenshot(&self, path: &Path) {
        let png = self
            .rt
            .block_on(self.client.screenshot())
            .expect("a screenshot");
        std::fs::write(path, &png).unwrap();
        eprintln!("screenshot of the live page: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.client.clone().close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn node_state(name: &str, state: &str) -> String {
    format!(
        "return document.querySelector('[data-node=\"{name}\"][data-state=\"{state}\"]') !== null"
    )
}

/// Where the screenshots go: kept after the test, beside the build.
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_browser_sees_every_node_a_new_round_and_a_killed_node_die_and_come_back() {
    let (Some(_), Some(_)) = (
        tool("chromedriver", "chromium-driver"),
        tool("chromium", "chromium"),
    ) else {
        return;
    };
    let mesh = Mesh::up(&["--distributors", "3", "--ui"]);
    let url = mesh.wait_for("the live page's address", |v| v["event"] == "ui_serving")["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let received = mesh.wait_for("an OTP at requester-1", |v| {
        v["node"] == "requester-1" && v["event"] == "otp_received"
    });
    let otp = received["otp"].as_str().unwrap().to_string();
    let dir = mesh.dir.path().to_path_buf();
    let json = mesh.mesh_json();
    assert_eq!(
        json["ui"].as_str(),
        Some(url.as_str()),
        "mesh.json names the page"
    );
    let names: Vec<String> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();

    let browser = Browser::start();
    browser.open(&url);
    browser.until(
        "that it is live",
        "return document.getElementById('live').dataset.live === 'yes'",
    );
    let shown = browser.until(
        "every node",
        &format!(
            "const n = [...document.querySelectorAll('#nodes [data-node]')].map(e => e.dataset.node);
             return n.length === {} ? n : null",
            names.len()
        ),
    );
    let mut shown: Vec<String> = serde_json::from_value(shown).unwrap();
    shown.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(shown, want);
    browser.until(
        "the OTP requester-1 received, counted",
        "const c = document.querySelector('[data-count=\"OTPs received\"]');
         return c !== null && Number(c.textContent) >= 1",
    );

    // A round asked for from another terminal appears on the timeline.
    let round = steered(&dir, &["round"])["round"].as_u64().unwrap();
    browser.until(
        &format!("round {round}"),
        &format!("return document.querySelector('#rounds [data-round=\"{round}\"]') !== null"),
    );
    browser.until(
        &format!("round {round} delivered"),
        &format!(
            "return document.querySelector('#rounds [data-round=\"{round}\"][data-round-state=\"delivered\"]') !== null"
        ),
    );

    // Killed: marked dead in the table and the graph.
    steered(&dir, &["kill", "distributor-1"]);
    browser.until("distributor-1 dead", &node_state("distributor-1", "exited"));
    browser.until(
        "distributor-1 dead in the graph",
        "return document.querySelector('#graph g.down[data-graph-node=\"distributor-1\"]') !== null",
    );
    let killed = shots().join("lab-killed.png");
    browser.screenshot(&killed);

    // Restarted: back, and ready again.
    steered(&dir, &["restart", "distributor-1"]);
    browser.until(
        "distributor-1 back",
        &node_state("distributor-1", "running"),
    );
    browser.until(
        "distributor-1 ready",
        "const r = document.querySelector('[data-node=\"distributor-1\"] .state');
         return r !== null && r.textContent === 'running'",
    );
    let back = shots().join("lab.png");
    browser.screenshot(&back);
    for shot in [&killed, &back] {
        let bytes = std::fs::read(shot).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{}",
            shot.display()
        );
    }

    // No secret reaches the page: not in what it shows, not in what it was sent.
    let text = browser.eval("return document.documentElement.outerHTML");
    assert!(
        !text.as_str().unwrap().contains(&otp),
        "the page shows an OTP"
    );
    let (status, state) = http("GET", &format!("{url}state"));
    assert_eq!(status, 200);
    assert!(!state.contains(&otp), "/state carries an OTP");
    let state: Value = serde_json::from_str(&state).unwrap();
    assert!(state["counts"]["otps_received"].as_u64().unwrap() >= 1);
    drop(browser);
    mesh.stop();
}

/// A request whose `Host` is another name (a DNS-rebinding page's) is refused; the page itself
/// carries a strict Content-Security-Policy; an address off loopback is refused at start.
#[test]
fn the_page_answers_only_its_own_host_and_only_on_loopback() {
    let mesh = Mesh::up(&["--ui", "127.0.0.1:0"]);
    let url = mesh.wait_for("the live page's address", |v| v["event"] == "ui_serving")["url"]
        .as_str()
        .unwrap()
        .to_string();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let raw = |host_header: &str, path: &str| {
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let rebound = raw("attacker.example:80", "/state");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    let page = raw(&host, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{page}"
    );
    for asset in ["/app.js", "/style.css"] {
        assert!(raw(&host, asset).starts_with("HTTP/1.1 200"), "{asset}");
    }
    mesh.stop();

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["mesh", "up", "--ui", "0.0.0.0:0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loopback only"), "{err}");
}
