//! `shallot completions SHELL` and `shallot man --out-dir DIR`: shell completions and man
//! pages, generated from the same clap definition as the command line itself, so that they
//! cannot drift from the real flags.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// `completions`' arguments.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// `man`'s arguments.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Where to write the pages (one per command: shallot.1, shallot-relay-run.1, …). The
    /// directory must exist.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Prints the completion script for `args.shell` on standard output.
pub fn completions(args: &CompletionsArgs) {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "shallot", &mut std::io::stdout());
}

/// Writes a man page for `shallot` and for each of its subcommands into `args.out_dir`.
pub fn man(args: &ManArgs) -> Result<(), std::io::Error> {
    if !args.out_dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no such directory", args.out_dir.display()),
        ));
    }
    clap_mangen::generate_to(super::Cli::command(), &args.out_dir)
}
