//! The `peerlink` binary: parses the command line, sets up logging, runs the command, and turns
//! every error into one line on stderr and a non-zero exit status.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use peerlink::admin::{self, PeersReport, StatusReport};
use peerlink::cli::{Cli, Command, QueryArgs};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's first line says what is wrong; the rest is usage, available with --help.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see peerlink --help)");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => {
            let config = args.node.load_config()?;
            peerlink::node::run(config)?;
            Ok(())
        }
        Command::Status(q) => {
            let body = fetch(&q, "/status")?;
            if q.json {
                println!("{body}");
            } else {
                let report: StatusReport =
                    serde_json::from_str(&body).context("unexpected /status response")?;
                print!("{}", admin::render_status(&report));
            }
            Ok(())
        }
        Command::Peers(q) => {
            let body = fetch(&q, "/peers")?;
            if q.json {
                println!("{body}");
            } else {
                let report: PeersReport =
                    serde_json::from_str(&body).context("unexpected /peers response")?;
                print!("{}", admin::render_peers(&report));
            }
            Ok(())
        }
    }
}

/// GETs `path` from the admin API and returns the body.
fn fetch(q: &QueryArgs, path: &str) -> Result<String> {
    let url = format!("{}{path}", q.admin.trim_end_matches('/'));
    let mut request = ureq::get(&url).timeout(std::time::Duration::from_secs(10));
    if let Some(token) = q.effective_token() {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(response) => response
            .into_string()
            .with_context(|| format!("cannot read the response of {url}")),
        Err(ureq::Error::Status(401, _)) => anyhow::bail!(
            "{url}: 401 unauthorized (pass --token or set {})",
            peerlink::cli::TOKEN_ENV
        ),
        Err(ureq::Error::Status(code, response)) => {
            let body = response.into_string().unwrap_or_default();
            anyhow::bail!("{url}: HTTP {code}: {}", body.trim())
        }
        Err(ureq::Error::Transport(t)) => anyhow::bail!(
            "cannot reach the node's admin API at {url}: {}{}",
            t.kind(),
            t.message().map(|m| format!(": {m}")).unwrap_or_default()
        ),
    }
}
