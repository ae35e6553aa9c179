//! `shallot`: the one binary of the Shallot anonymous messaging network.
//!
//! Each subcommand is a thin layer over the library crates; see `docs/spec.md` for the
//! protocol and `README.md` for how to run a network.

#![forbid(unsafe_code)]

use clap::Parser;

/// Onion-routed anonymous messaging in the terminal.
#[derive(Parser, Debug)]
#[command(name = "shallot", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
