//! `otpmesh completions` and `otpmesh man`: shell integration generated from the command line
//! itself, so they never drift from it.

use super::Outcome;
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;

pub fn completions(args: CompletionsArgs) -> Outcome {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "otpmesh", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(())
}

pub fn man(args: ManArgs) -> Outcome {
    let command = Cli::command();
    match args.dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("writing the manual page")?;
            out.flush().context("writing the manual page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
        }
    }
    Ok(())
}
