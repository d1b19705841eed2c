//! `mycel`: the node (`mycel up`) and the client commands that talk to a node's API.
//!
//! Thin on purpose: parse the command line, then hand over to `up` (a `mycel_node::Node` until a
//! signal) or `client` (HTTP calls and printing). Exit codes: 0 ok, 1 failure, 2 usage.

mod cli;
mod client;
mod config;
mod up;

use std::{process::ExitCode, time::Duration};

use futures::FutureExt;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mycel: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = cli.node.clone().unwrap_or_else(client::local_node);
    if !matches!(cli.command, cli::Command::Up(_)) {
        client::choose_token(&node, cli.token.clone());
        client::choose_user_key(cli.user_key.clone());
    }
    let result = match cli.command {
        cli::Command::Up(args) => match config::resolve(*args) {
            Ok(config) => runtime.block_on(up::run(config)),
            Err(e) => {
                eprintln!("mycel: {}", one_line(&e));
                return ExitCode::from(2);
            }
        },
        cli::Command::Nodes(args) => runtime.block_on(client::nodes(&node, args.json)),
        cli::Command::Cluster(args) => runtime.block_on(client::cluster(&node, args.json)),
        cli::Command::Deploy(args) => {
            let wait = args.wait.then(|| Duration::from_secs(args.timeout));
            runtime.block_on(client::deploy(&node, &args.file, wait, args.json))
        }
        cli::Command::Apps(args) => match args.command {
            Some(cli::AppsCommand::Browse(browse)) => {
                runtime.block_on(client::browse(&node, browse.json))
            }
            None => runtime.block_on(client::apps(&node, args.json)),
        },
        cli::Command::Status(args) => runtime.block_on(client::status(&node, &args.app, args.json)),
        cli::Command::Scale(args) => {
            runtime.block_on(client::scale(&node, &args.app, args.replicas, args.json))
        }
        cli::Command::Stop(args) => {
            let flags = client::StopFlags {
                purge: args.purge,
                force: args.force,
            };
            runtime.block_on(client::stop(&node, &args.app, flags, args.json))
        }
        cli::Command::Volumes(args) => {
            runtime.block_on(client::volumes::list(&node, args.app.as_deref(), args.json))
        }
        cli::Command::Volume(args) => runtime.block_on(match &args.command {
            cli::VolumeCommand::Snapshot { app, name } => {
                client::volumes::snapshot(&node, app, name, args.json)
            }
        }),
        cli::Command::Versions(args) => {
            runtime.block_on(client::versions(&node, &args.app, args.json))
        }
        cli::Command::Rollback(args) => {
            let wait = args.wait.then(|| Duration::from_secs(args.timeout));
            runtime.block_on(client::rollback(
                &node,
                &args.app,
                args.to.as_deref(),
                wait,
                args.json,
            ))
        }
        cli::Command::Promote(args) => {
            runtime.block_on(client::promote(&node, &args.app, args.json))
        }
        cli::Command::Secret(args) => runtime.block_on(match &args.command {
            cli::SecretCommand::Set { app, name } => {
                client::secrets::set(&node, app, name, args.json).boxed()
            }
            cli::SecretCommand::Ls { app } => client::secrets::list(&node, app, args.json).boxed(),
            cli::SecretCommand::Rm { app, name } => {
                client::secrets::remove(&node, app, name, args.json).boxed()
            }
        }),
        cli::Command::Logs(args) => {
            runtime.block_on(client::logs(&node, &args.app, args.follow, args.json))
        }
        cli::Command::Push(args) => runtime.block_on(client::push(&node, &args.file, args.json)),
        cli::Command::Whoami => client::whoami(),
        cli::Command::JoinTicket(args) => runtime.block_on(client::join_ticket(&node, args.json)),
        cli::Command::Completions(args) => {
            cli::completions(args.shell).map_err(anyhow::Error::from)
        }
        cli::Command::Man => cli::man().map_err(anyhow::Error::from),
        cli::Command::Version => {
            println!("mycel {}", cli::VERSION);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mycel: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, as the contract promises.
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").replace('\n', " ")
}
