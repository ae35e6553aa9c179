//! `shallot directory init|run`: create a directory authority's key, and run the authority
//! (`docs/spec.md` §5).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use shallot_authority::store::KEY_FILE;
use shallot_authority::{Authority, AuthorityConfig, AuthorityError};
use shallot_crypto::hex;
use shallot_crypto::keyfile::{ensure_private_dir, KeyFileError};
use shallot_crypto::keys::IdentityKeypair;
use shallot_directory::{AuthorityInfo, NetworkError, NetworkFile};
use thiserror::Error;

/// The `directory` subcommands.
#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Create this authority's signing key and print the network.toml entry to share.
    Init {
        /// The authority's name in network.toml.
        #[arg(long, default_value = "authority")]
        name: String,
        /// The HTTP address other nodes will reach it at.
        #[arg(long, default_value = "127.0.0.1:7000", value_parser = super::preflight::reachable_addr)]
        address: SocketAddr,
    },
    /// Run the authority: accept descriptors, vote, and serve the consensus.
    Run {
        /// The address to serve HTTP on.
        #[arg(long)]
        listen: SocketAddr,
        /// The network file naming every authority.
        #[arg(long, value_name = "FILE")]
        network: PathBuf,
    },
}

/// Why a directory command failed.
#[derive(Debug, Error)]
pub enum DirectoryError {
    /// `init` would overwrite an existing key.
    #[error("{0} already exists: this data directory already holds an authority key")]
    AlreadyInitialised(PathBuf),
    /// The name cannot go in a network file.
    #[error("invalid --name: {0}")]
    BadName(String),
    /// The key file or data directory.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The authority could not start.
    #[error(transparent)]
    Start(#[from] AuthorityError),
    /// The async runtime or signal handling failed.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A mistake in the command line.
    #[error(transparent)]
    Preflight(#[from] super::preflight::PreflightError),
    /// Another authority runs on this data directory.
    #[error(transparent)]
    Locked(#[from] shallot_rt::DirLockError),
}

/// Runs one `directory` subcommand with the given data directory.
pub fn run(data_dir: &Path, cmd: DirectoryCommand) -> Result<(), DirectoryError> {
    match cmd {
        DirectoryCommand::Init { name, address } => init(data_dir, &name, address),
        DirectoryCommand::Run { listen, network } => {
            super::preflight::initialised(
                data_dir,
                KEY_FILE,
                "authority key",
                "create it with `shallot directory init --data-dir {dir}`",
            )?;
            let _lock = shallot_rt::DirLock::acquire(data_dir)?;
            let network = NetworkFile::load(&network)?;
            super::init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(AuthorityConfig {
                data_dir: data_dir.to_path_buf(),
                listen,
                network,
            }))
        }
    }
}

fn init(data_dir: &Path, name: &str, address: SocketAddr) -> Result<(), DirectoryError> {
    let key_path = data_dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(DirectoryError::AlreadyInitialised(key_path));
    }
    let key = IdentityKeypair::generate(&mut rand::rngs::OsRng);
    let info = AuthorityInfo {
        name: name.to_string(),
        address,
        key: key.public(),
    };
    // Check that the entry we print is one a network file accepts.
    NetworkFile::parse(&info.to_toml(), Path::new("--name"))
        .map_err(|e| DirectoryError::BadName(e.to_string()))?;
    ensure_private_dir(data_dir)?;
    key.save(&key_path)?;
    println!("Created the authority key {}", key_path.display());
    println!("Public key: {}", hex::encode(key.public().as_bytes()));
    println!();
    println!("Add this entry to the network.toml that every node of the network uses:");
    println!();
    print!("{}", info.to_toml());
    Ok(())
}

async fn serve(config: AuthorityConfig) -> Result<(), DirectoryError> {
    let handle = Authority::start(config).await?;
    let why = super::wait_for_stop().await?;
    tracing::info!("stopping ({why})");
    handle.shutdown().await;
    Ok(())
}
