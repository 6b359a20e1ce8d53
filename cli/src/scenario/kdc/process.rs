//! The kdc steps as processes: each runs the real `otpmesh kdc` commands (as both process
//! backends do for one-shot requests), with passphrase files written 0600 into the scenario's
//! directory.

use super::{arrived, judge, Registration, Transfer, KDC_TIMEOUT};
use crate::scenario::layout::Planned;
use crate::scenario::runner::Judged;
use crate::scenario::spec::KdcExpect;
use anyhow::{anyhow, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn work_dir(user: &Planned) -> PathBuf {
    user.data_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join("kdc-files")
}

fn passphrase_file(user: &Planned, label: &str, text: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = work_dir(user);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}-{label}.pass", user.name));
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn kdc_command(
    sub: &str,
    user: &Planned,
    centre: &Planned,
    name: &str,
    pass: &Path,
) -> anyhow::Result<tokio::process::Command> {
    let mut c = tokio::process::Command::new(std::env::current_exe()?);
    c.args(["kdc", sub, "--json", "--distributor"])
        .arg(centre.addr.to_string())
        .arg("--data-dir")
        .arg(&user.data_dir)
        .args(["--name", name, "--passphrase-file"])
        .arg(pass)
        .args(["--timeout-secs", &KDC_TIMEOUT.as_secs().to_string()])
        .kill_on_drop(true);
    Ok(c)
}

fn last_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_string()
}

async fn output(mut c: tokio::process::Command) -> anyhow::Result<std::process::Output> {
    tokio::time::timeout(KDC_TIMEOUT + Duration::from_secs(5), c.output())
        .await
        .map_err(|_| anyhow!("otpmesh kdc did not finish"))?
        .map_err(Into::into)
}

pub async fn register(r: &Registration<'_>, expect: &KdcExpect) -> anyhow::Result<Judged> {
    let Registration {
        user,
        centre,
        name,
        passphrase,
        old_passphrase,
    } = *r;
    let pass = passphrase_file(user, "new", passphrase)?;
    let mut c = kdc_command("register", user, centre, name, &pass)?;
    if let Some(old) = old_passphrase {
        c.arg("--old-passphrase-file")
            .arg(passphrase_file(user, "old", old)?);
    }
    c.stdin(Stdio::null());
    let out = output(c).await?;
    let result = if out.status.success() {
        let v: Value =
            serde_json::from_slice(&out.stdout).context("reading kdc register's JSON")?;
        let again = if v["replaced"] == true { " again" } else { "" };
        Ok(format!("{name} registered{again}"))
    } else {
        Err(last_error(&out.stderr))
    };
    Ok(judge(expect, result))
}

pub async fn send(t: &Transfer<'_>, expect: &KdcExpect) -> anyhow::Result<Judged> {
    let Transfer {
        from,
        to,
        centre,
        to_name,
        file,
        passphrase,
        receiver_passphrase,
        otp,
    } = *t;
    let dir = work_dir(from);
    std::fs::create_dir_all(&dir)?;
    let input = dir.join(format!("{}-to-{}.bin", from.name, to.name));
    let received = dir.join(format!("{}-from-{}.bin", to.name, from.name));
    std::fs::write(&input, file)?;
    let _ = std::fs::remove_file(&received);

    // The receiver first: it tells the centre where it listens, then says it is ready.
    let rx_pass = passphrase_file(to, "receiver", receiver_passphrase)?;
    let mut rx = kdc_command("receive", to, centre, &to.name, &rx_pass)?;
    rx.arg("--out")
        .arg(&received)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut receiver = rx.spawn()?;
    let mut lines = BufReader::new(receiver.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(KDC_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if serde_json::from_str::<Value>(&line).is_ok_and(|v| v["event"] == "ready") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if !ready {
        let _ = receiver.kill().await;
        let out = receiver.wait_with_output().await?;
        return Ok(judge(
            expect,
            Err(format!(
                "the receiver did not start: {}",
                last_error(&out.stderr)
            )),
        ));
    }

    let pass = passphrase_file(from, "sender", passphrase)?;
    let mut tx = kdc_command("send", from, centre, &from.name, &pass)?;
    tx.args(["--to", to_name, "--file"])
        .arg(&input)
        .stdin(Stdio::null());
    if let Some(otp) = otp {
        tx.args(["--otp", otp]);
    }
    let out = output(tx).await?;
    if !out.status.success() {
        let _ = receiver.kill().await;
        return Ok(judge(expect, Err(last_error(&out.stderr))));
    }
    let done = tokio::time::timeout(KDC_TIMEOUT, receiver.wait()).await;
    if !matches!(done, Ok(Ok(s)) if s.success()) {
        let _ = receiver.kill().await;
        return Ok(judge(expect, Err("the receiver did not finish".into())));
    }
    let got =
        std::fs::read(&received).with_context(|| format!("reading {}", received.display()))?;
    Ok(judge(expect, arrived(t, &got)))
}
