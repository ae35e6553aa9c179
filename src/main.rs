//! `shallot`: the one binary of the Shallot anonymous messaging network.
//!
//! Each subcommand is a thin layer over the library crates; see `docs/spec.md` for the
//! protocol and `README.md` for how to run a network.

#![forbid(unsafe_code)]

mod cmd;

use clap::Parser;

fn main() {
    let cli = cmd::Cli::parse();
    if let Err(e) = cmd::run(cli) {
        eprintln!("shallot: {e}");
        std::process::exit(1);
    }
}
