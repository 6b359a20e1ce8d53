//! `otpmesh mesh`: a local mesh of real child processes on 127.0.0.1, and the commands that steer
//! it while it runs.
//!
//! `mesh up` plans every node first ([`plan`]: identity, ports, data dir), writes the mesh config
//! they all share, starts one `otpmesh node` per node ([`child`]) with its stdout (JSON events)
//! piped here, its stderr in its log file and a control pipe on its stdin, writes `mesh.json`, and
//! runs the [`lab`]: it follows the events, supervises the processes, and answers `otpmesh mesh
//! status|kill|restart|partition|heal|round` from other terminals over its [`control`] socket.

pub mod child;
pub mod control;
pub mod lab;
pub mod plan;
mod ports;
mod remote;
pub mod ui;

pub use child::{spawn, stop_all};
pub use plan::{free_ports, NodeEntry};
pub use remote::steer;

use super::Outcome;
use crate::cli::MeshUpArgs;
use crate::scenario::backend::Backend;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most nodes one `mesh up` starts.
pub const MAX_NODES: u32 = 512;
/// Control requests queued for the lab.
const REQUEST_QUEUE: usize = 16;

pub async fn up(args: MeshUpArgs) -> Outcome {
    let dir = plan::absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // First: a mesh up already running in this directory must find its config untouched.
    let (asked_tx, mut asked) = mpsc::channel(REQUEST_QUEUE);
    let control = control::serve(&dir, asked_tx).await?;
    let planned = match plan::plan(&args) {
        Ok(planned) => planned,
        Err(e) => {
            let _ = std::fs::remove_file(&control);
            return Err(e.into());
        }
    };
    let (backend, mut events) = Backend::new(false);
    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
    );
    let mesh_json = dir.join("mesh.json");
    let paths = (
        mesh_json.clone(),
        planned.mesh_path.clone(),
        control.clone(),
    );
    let mut lab = lab::Lab::new(
        &args,
        planned.entries,
        paths,
        backend,
        planned.generator,
        bar,
    );
    if let Some(addr) = args.ui {
        match ui::Page::serve(addr).await {
            Ok(page) => lab.show_on(page),
            Err(e) => {
                let _ = std::fs::remove_file(&control);
                return Err(e.into());
            }
        }
    }
    let started = lab.start_all().context("starting the mesh");
    let result = match started {
        Ok(()) => {
            for v in lab.entries.iter().filter(|e| e.role == "verifier") {
                // Which setting lets every local PAM client in, said once (stderr: stdout is
                // events).
                eprintln!(
                    "{}: RADIUS on {} from 127.0.0.1 without a Message-Authenticator \
                     (require_message_authenticator = false in {}, for Debian 12's pam_radius_auth); \
                     /validate/check at {}",
                    v.name,
                    v.radius.as_deref().unwrap_or("?"),
                    v.data_dir.join("radius-clients.toml").display(),
                    v.http.as_deref().unwrap_or("?"),
                );
            }
            lab.bar.enable_steady_tick(Duration::from_millis(120));
            if !args.json {
                lab.bar.suspend(|| {
                    println!(
                        "mesh of {} nodes starting; see {}\nsteer it from another terminal: otpmesh mesh status|kill|restart|partition|heal|round --dir {}{}",
                        lab.entries.len(),
                        mesh_json.display(),
                        args.dir.display(),
                        lab.ui_url().map(|u| format!("\nlive page: {u}")).unwrap_or_default()
                    )
                });
            }
            lab.run(&mut events, &mut asked).await
        }
        Err(e) => Err(e.into()),
    };
    lab.stop().await;
    let _ = std::fs::remove_file(&control);
    result
}
