//! The `peerlink` binary: parses the command line, sets up logging, runs the command, and turns
//! every error into one line on stderr and a non-zero exit status.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use peerlink::admin::{self, BansReport, PeersReport, StatusReport};
use peerlink::chain::producer::{hex, parse_public_key};
use peerlink::chain::{
    self, block::MAX_BLOCK_PAYLOAD_BYTES, to_hex, ChainParams, ChainStore, ProducerKey,
};
use peerlink::cli::{Cli, Command, ProduceArgs, QueryArgs};

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
    // The devnet prints its own table; its nodes' info lines would only scroll it away.
    let default_level = match cli.command {
        Command::Devnet(_) => "warn",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
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
        Command::Produce(args) => produce(&args),
        Command::Id(args) => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("data directory {}", args.data_dir.display()))?;
            let key = peerlink::node::load_node_key(&args.data_dir)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Keygen(args) => {
            let key = ProducerKey::create_in(&args.data_dir)?;
            println!(
                "key file {}",
                ProducerKey::path_in(&args.data_dir).display()
            );
            println!("public key {}", hex(&key.public()));
            Ok(())
        }
        Command::Bans(q) => {
            let body = fetch(&q, "/bans")?;
            if q.json {
                println!("{body}");
            } else {
                let report: BansReport =
                    serde_json::from_str(&body).context("unexpected /bans response")?;
                print!("{}", admin::render_bans(&report));
            }
            Ok(())
        }
        Command::Ban(args) => {
            let mut body = serde_json::json!({ "ip": args.ip.to_string(), "reason": args.reason });
            if let Some(d) = args.duration {
                body["duration"] = humantime::format_duration(d).to_string().into();
            }
            let answer = post(&args.query, "/ban", &body)?;
            println!("{answer}");
            Ok(())
        }
        Command::Unban(args) => {
            let answer = post(
                &args.query,
                "/unban",
                &serde_json::json!({ "ip": args.ip.to_string() }),
            )?;
            println!("{answer}");
            Ok(())
        }
        Command::Devnet(args) => {
            let system = actix::System::new();
            let mut out = std::io::stdout();
            match system.block_on(async { peerlink::devnet::run(&args, &mut out).await }) {
                Ok(_) => {
                    println!("devnet: ok, every node reached the tip");
                    Ok(())
                }
                Err(e) => Err(anyhow::anyhow!("devnet failed: {e}")),
            }
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

/// `peerlink produce`: appends blocks offline and prints the new height and tip.
fn produce(args: &ProduceArgs) -> Result<()> {
    if args.block_bytes > MAX_BLOCK_PAYLOAD_BYTES {
        anyhow::bail!("--block-bytes must be at most {MAX_BLOCK_PAYLOAD_BYTES}");
    }
    let key = ProducerKey::load_from(&args.data_dir)?;
    let producers = if args.producers.is_empty() {
        vec![key.public()]
    } else {
        args.producers
            .iter()
            .map(|k| parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(e))?
    };
    let params = ChainParams::new(args.network.clone(), producers);
    if !params.is_producer(&key.public()) {
        anyhow::bail!(
            "the key in {} ({}) is not among the --producer keys",
            ProducerKey::path_in(&args.data_dir).display(),
            hex(&key.public())
        );
    }
    let mut store = ChainStore::open(&args.data_dir, &params)
        .with_context(|| format!("chain store in {}", args.data_dir.display()))?;
    let started = std::time::Instant::now();
    let height = chain::produce(&mut store, &key, args.blocks, args.block_bytes)
        .with_context(|| format!("producing into {}", store.path().display()))?;
    log::info!(
        "produced {} blocks of {} bytes in {:.1} s",
        args.blocks,
        args.block_bytes,
        started.elapsed().as_secs_f64()
    );
    println!("height {height}");
    println!("tip {}", to_hex(&store.tip_hash()));
    Ok(())
}

/// GETs `path` from the admin API and returns the body.
fn fetch(q: &QueryArgs, path: &str) -> Result<String> {
    call(q, "GET", path, None)
}

/// POSTs `body` as JSON to `path` of the admin API and returns the answer's body.
fn post(q: &QueryArgs, path: &str, body: &serde_json::Value) -> Result<String> {
    call(q, "POST", path, Some(body))
}

fn call(
    q: &QueryArgs,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<String> {
    let url = format!("{}{path}", q.admin.trim_end_matches('/'));
    let mut request = ureq::request(method, &url).timeout(std::time::Duration::from_secs(10));
    if let Some(token) = q.effective_token() {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let result = match body {
        Some(b) => request.send_json(b.clone()),
        None => request.call(),
    };
    match result {
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
