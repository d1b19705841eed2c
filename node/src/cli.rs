//! The command line. Usage errors print one line on stderr and exit 2.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use libp2p::{Multiaddr, multiaddr::Protocol};
use mycel_mesh::JoinTicket;
use mycel_node::Bootstrap;

/// `0.1.0 (commit 1a2b3c4d5e6f, built 2026-12-07)`.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MYCEL_COMMIT"),
    ", built ",
    env!("MYCEL_BUILD_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "mycel",
    version = VERSION,
    about = "A peer-to-peer mesh that runs apps with no manager node"
)]
pub(crate) struct Cli {
    /// The node API that client commands talk to [default: the local node's, from node.json in
    /// the data dir, else http://127.0.0.1:7401].
    #[arg(long, global = true, env = "MYCEL_NODE")]
    pub(crate) node: Option<String>,
    /// The API token client commands send (a node not on loopback needs it); found by itself
    /// for a local node, in the data dir whose node.json names --node.
    #[arg(long, global = true, env = "MYCEL_API_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The key that signs deploys, scales and stops (made on first use; default
    /// $XDG_CONFIG_HOME/mycel/user.key, else ~/.config/mycel/user.key).
    #[arg(long, global = true, env = "MYCEL_USER_KEY", value_name = "FILE")]
    pub(crate) user_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node: join a mesh through a bootstrap peer, or start a new one.
    Up(Box<UpArgs>),
    /// The mesh as the node sees it.
    Nodes(ListArgs),
    /// The placement group: leader, term, voters, learners.
    Cluster(ListArgs),
    /// Deploy an app from its manifest; uploads the files the manifest names first.
    Deploy(DeployArgs),
    /// The apps deployed in this mesh; `apps browse`: the apps found through DHT discovery.
    Apps(AppsArgs),
    /// An app and its instances.
    Status(AppArgs),
    /// Change how many instances of an app run.
    Scale(ScaleArgs),
    /// Remove an app and all its instances; its volumes are kept unless `--purge`.
    Stop(StopArgs),
    /// The manifests an app was last deployed with, newest first.
    Versions(AppArgs),
    /// Deploy an earlier version of an app again (by default the one before the current).
    Rollback(RollbackArgs),
    /// Let the canaries of an app's rollout replace the rest of its instances.
    Promote(AppArgs),
    /// An app's secrets: `set APP NAME` (the value on stdin), `ls APP`, `rm APP NAME`.
    Secret(SecretArgs),
    /// Volumes (every app's, or APP's): their nodes, sizes and latest snapshots.
    Volumes(VolumesArgs),
    /// `volume snapshot APP NAME`: snapshot a volume into the mesh now.
    Volume(VolumeArgs),
    /// An app's log lines from every instance: `<instance> <stream>: <line>`.
    Logs(LogsArgs),
    /// Upload a file (a .wasm module, an archive) into the mesh's blob store; prints its hash.
    Push(PushArgs),
    /// The public form of the user key that signs deploys, scales and stops (made on first use).
    Whoami,
    /// The ticket a new node joins this mesh with (`mycel up --join TICKET`); a private mesh's
    /// holds its secret, so the node's API token is needed even on loopback.
    JoinTicket(ListArgs),
    /// Shell completions for bash, zsh, fish, elvish or powershell, on stdout.
    Completions(CompletionsArgs),
    /// The manual page (roff), on stdout: `mycel man > mycel.1`.
    Man,
    /// The version, the commit it was built from and the day.
    Version,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// Writes `shell`'s completions for the whole command line to stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mycel", &mut script);
    print_all(&script)
}

/// Writes the manual page to stdout.
pub(crate) fn man() -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    print_all(&page)
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is no error.
fn print_all(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The manifest: a .toml or .json file. Relative paths in it are read from its directory.
    pub(crate) file: std::path::PathBuf,
    /// Follow the rollout: exit 0 once it succeeds (or its canaries await a promote), 1 when it
    /// fails or is reverted.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120, requires = "wait")]
    pub(crate) timeout: u64,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The app's name.
    pub(crate) app: String,
    /// The version to bring back (see `mycel versions APP`).
    #[arg(long, value_name = "VERSION")]
    pub(crate) to: Option<String>,
    /// Follow the rollout, as `deploy --wait` does.
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120, requires = "wait")]
    pub(crate) timeout: u64,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AppArgs {
    /// The app's name.
    pub(crate) app: String,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// The app's name.
    pub(crate) app: String,
    /// Delete its volumes and their snapshots too (also for an app already stopped).
    #[arg(long)]
    pub(crate) purge: bool,
    /// Stop it even though other apps depend on it.
    #[arg(long)]
    pub(crate) force: bool,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VolumesArgs {
    /// Only this app's volumes.
    pub(crate) app: Option<String>,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VolumeArgs {
    #[command(subcommand)]
    pub(crate) command: VolumeCommand,
    /// Print the API's JSON unchanged.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCommand {
    /// Snapshot a volume into the mesh's blob store now (only what changed since the last is
    /// stored), copied to two other nodes so the app can move with its data.
    Snapshot { app: String, name: String },
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The app's name.
    pub(crate) app: String,
    /// Keep printing new lines as they come, until interrupted.
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Print each log line's event as the API's JSON, one per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    pub(crate) command: SecretCommand,
    /// Print the API's JSON unchanged.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCommand {
    /// Set a secret to the value read from stdin (one trailing newline dropped). It is sealed
    /// here, to the mesh's key, before it is sent; a running app that uses it rolls.
    Set { app: String, name: String },
    /// The names of an app's secrets (never their values).
    Ls { app: String },
    /// Remove a secret the app's manifest no longer names.
    Rm { app: String, name: String },
}

#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// The app's name.
    pub(crate) app: String,
    /// How many instances should run (0 keeps the app deployed with nothing running).
    pub(crate) replicas: u32,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The file to upload.
    pub(crate) file: std::path::PathBuf,
    /// Print the API's JSON answer instead of the hash alone.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AppsArgs {
    #[command(subcommand)]
    pub(crate) command: Option<AppsCommand>,
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AppsCommand {
    /// The apps found through DHT discovery, with the nodes that serve them.
    Browse(ListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print the API's JSON unchanged.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Flags of `mycel up`. Every one can also come from `MYCEL_*` or the `--config` file; flags win
/// over the environment, the environment over the file.
#[derive(Debug, Args, Default)]
pub(crate) struct UpArgs {
    /// Where the node keeps its key, state and node.json.
    #[arg(long, env = "MYCEL_DATA_DIR")]
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// libp2p multiaddr to listen on (repeatable); port 0 picks a free port.
    #[arg(long, env = "MYCEL_LISTEN", value_delimiter = ',', value_parser = parse_multiaddr)]
    pub(crate) listen: Vec<Multiaddr>,
    /// HOST:PORT of the HTTP API.
    #[arg(long, env = "MYCEL_API")]
    pub(crate) api: Option<String>,
    /// Require the API token (<data-dir>/api.token) even on loopback; elsewhere it always is.
    #[arg(long, env = "MYCEL_API_TOKEN_REQUIRED",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) api_token_required: bool,
    /// HOST:PORT of the HTTP gateway.
    #[arg(long, env = "MYCEL_GATEWAY")]
    pub(crate) gateway: Option<String>,
    /// IP address where this node listens at the ports apps publish ([[ports]]; default
    /// 127.0.0.1): every node takes connections for every published port.
    #[arg(long, env = "MYCEL_INGRESS_ADDRESS", value_name = "IP")]
    pub(crate) ingress_address: Option<String>,
    /// A peer to join through: a multiaddr ending in /p2p/<peer id> (an open mesh, or a node
    /// that holds its mesh's secret already), or a join ticket (repeatable).
    #[arg(long, env = "MYCEL_BOOTSTRAP", value_delimiter = ',', value_parser = parse_bootstrap)]
    pub(crate) bootstrap: Vec<Bootstrap>,
    /// Join the mesh of this ticket (`mycel join-ticket` on a member prints it; node.json's
    /// "join") (repeatable).
    #[arg(long, env = "MYCEL_JOIN", value_delimiter = ',', value_parser = parse_ticket)]
    pub(crate) join: Vec<JoinTicket>,
    /// Start a deliberately open mesh: no secret, any node may join (and QUIC is on). The default
    /// is a private mesh. Kept in the data dir.
    #[arg(long, env = "MYCEL_OPEN", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) open: bool,
    /// This node's name in listings (default: host name and the end of the peer id).
    #[arg(long, env = "MYCEL_NAME")]
    pub(crate) name: Option<String>,
    /// KEY=VALUE label advertised to the mesh (repeatable).
    #[arg(long = "label", env = "MYCEL_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,
    /// Comma list out of wasm,docker,process (default: every runtime this host has).
    #[arg(long, env = "MYCEL_RUNTIMES")]
    pub(crate) runtimes: Option<String>,
    /// The gateway routes Host: <app>.<domain>.
    #[arg(long, env = "MYCEL_DOMAIN")]
    pub(crate) domain: Option<String>,
    /// TOML file with the same keys as these flags.
    #[arg(long, env = "MYCEL_CONFIG")]
    pub(crate) config: Option<std::path::PathBuf>,
    /// How long this node's app listings live in the DHT, in seconds (tests shorten it; renewed
    /// after a third of it).
    #[arg(long, env = "MYCEL_DISCOVERY_TTL", value_name = "SECS", hide = true,
          value_parser = clap::value_parser!(u64).range(3..=86_400))]
    pub(crate) discovery_ttl: Option<u64>,
}

pub(crate) fn parse_multiaddr(s: &str) -> Result<Multiaddr, String> {
    s.parse()
        .map_err(|e| format!("not a multiaddr ({e}); e.g. /ip4/127.0.0.1/tcp/7400"))
}

/// A multiaddr ending in `/p2p/<peer id>`, or a join ticket.
pub(crate) fn parse_bootstrap(s: &str) -> Result<Bootstrap, String> {
    if JoinTicket::looks_like_ticket(s) {
        return parse_ticket(s).map(Bootstrap::Ticket);
    }
    let addr = parse_multiaddr(s)?;
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => Ok(Bootstrap::Addr(addr)),
        _ => Err(
            "a bootstrap address must end in /p2p/<peer id> (or be a join ticket: mycel…)".into(),
        ),
    }
}

pub(crate) fn parse_ticket(s: &str) -> Result<JoinTicket, String> {
    s.parse::<JoinTicket>().map_err(|e| e.to_string())
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("label '{s}' must be KEY=VALUE"))?;
    mycel_protocol::membership::validate_label(key, value).map_err(|e| e.to_string())?;
    Ok((key.to_string(), value.to_string()))
}

/// Parses the command line; on a usage error prints one line and returns the exit code.
pub(crate) fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|error| {
        use clap::error::ErrorKind;
        match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = error.print();
                if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                }
            }
            _ => {
                eprintln!("mycel: {} (see 'mycel --help')", first_line(&error));
                ExitCode::from(2)
            }
        }
    })
}

/// clap's message without its "error: " prefix, usage block and tips.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid usage");
    line.trim_start_matches("error: ").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_needs_a_peer_id() {
        assert!(parse_bootstrap("/ip4/127.0.0.1/tcp/7400").is_err());
        assert!(
            parse_bootstrap(
                "/ip4/127.0.0.1/tcp/7400/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            )
            .is_ok()
        );
    }

    #[test]
    fn bootstrap_and_join_take_tickets() {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            .parse()
            .unwrap();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/7400".parse().unwrap();
        let ticket = JoinTicket::new(
            peer,
            std::slice::from_ref(&addr),
            Some(mycel_mesh::MeshSecret::from_bytes([3; 32])),
        );
        let text = ticket.to_string();
        assert_eq!(
            parse_bootstrap(&text).unwrap(),
            Bootstrap::Ticket(ticket.clone())
        );
        assert_eq!(
            parse_bootstrap(&text).unwrap().dial_addrs(),
            vec![addr.with(Protocol::P2p(peer))]
        );
        let cli = Cli::try_parse_from(["mycel", "up", "--join", &text, "--join", &text]).unwrap();
        let Command::Up(args) = cli.command else {
            panic!("{cli:?}");
        };
        assert_eq!(args.join, vec![ticket.clone(), ticket]);
        let error = parse_ticket("mycelnotaticket").unwrap_err();
        assert!(error.contains("join ticket"), "{error}");
        let error = parse_bootstrap("mycel2222").unwrap_err();
        assert!(error.contains("join ticket"), "{error}");
        assert!(Cli::try_parse_from(["mycel", "join-ticket", "--json"]).is_ok());
        let cli = Cli::try_parse_from(["mycel", "up", "--open"]).unwrap();
        assert!(matches!(cli.command, Command::Up(args) if args.open));
    }

    #[test]
    fn labels_are_key_value() {
        assert_eq!(
            parse_label("zone=eu-1").unwrap(),
            ("zone".into(), "eu-1".into())
        );
        assert!(parse_label("zone").is_err());
        assert!(parse_label("bad key=x").is_err());
    }

    #[test]
    fn app_commands_parse() {
        let cli = Cli::try_parse_from(["mycel", "deploy", "app.toml", "--wait"]).unwrap();
        let Command::Deploy(args) = cli.command else {
            panic!("{cli:?}");
        };
        assert!(args.wait);
        assert_eq!(args.timeout, 120);
        // --timeout means nothing without --wait.
        assert!(Cli::try_parse_from(["mycel", "deploy", "app.toml", "--timeout", "5"]).is_err());

        let cli = Cli::try_parse_from(["mycel", "scale", "hello", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Scale(ScaleArgs { replicas: 3, .. })
        ));
        assert!(Cli::try_parse_from(["mycel", "scale", "hello", "-1"]).is_err());
        assert!(Cli::try_parse_from(["mycel", "scale", "hello", "many"]).is_err());
        assert!(Cli::try_parse_from(["mycel", "status"]).is_err());
        for command in ["cluster", "apps", "nodes"] {
            assert!(Cli::try_parse_from(["mycel", command, "--json"]).is_ok());
        }
        let cli = Cli::try_parse_from(["mycel", "apps", "browse", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Apps(AppsArgs {
                command: Some(AppsCommand::Browse(ListArgs { json: true })),
                ..
            })
        ));
        assert!(Cli::try_parse_from(["mycel", "apps", "nope"]).is_err());
        let cli = Cli::try_parse_from(["mycel", "whoami", "--user-key", "/k"]).unwrap();
        assert!(matches!(cli.command, Command::Whoami));
        assert_eq!(cli.user_key.as_deref(), Some(std::path::Path::new("/k")));
    }

    #[test]
    fn usage_errors_are_one_line() {
        let error = Cli::try_parse_from(["mycel", "up", "--nope"]).unwrap_err();
        let line = first_line(&error);
        assert!(line.contains("--nope"), "{line}");
        assert!(!line.contains('\n'));
    }
}
