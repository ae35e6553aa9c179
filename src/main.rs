//! `shallot`: the one binary of the Shallot anonymous messaging network.
//!
//! Each subcommand is a thin layer over the library crates; see `docs/spec.md` for the
//! protocol and `README.md` for how to run a network. Every error a user can cause prints one
//! line and exits with status 1.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = shallot::cmd::Cli::parse();
    if let Err(e) = shallot::cmd::run(cli) {
        eprintln!("shallot: {e}");
        std::process::exit(1);
    }
}
