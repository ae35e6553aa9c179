//! `shallot`: the one binary of the Shallot anonymous messaging network.
//!
//! Each subcommand is a thin layer over the library crates; see `docs/spec.md` for the
//! protocol and `README.md` for how to run a network. Every error a user can cause prints one
//! line and exits with status 1.

#![forbid(unsafe_code)]

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    let cli = match shallot::cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    if let Err(e) = shallot::cmd::run(cli) {
        // An error can carry text from the network (a relay's reason, say): one line, and
        // nothing in it reaches the terminal as a control sequence.
        eprintln!("shallot: {}", shallot_tui::text::one_line(&e.to_string()));
        std::process::exit(1);
    }
}

/// `--help` and `--version` print and exit 0; a missing subcommand prints the help on
/// standard error and exits 1; any other mistake in the arguments prints one line and exits
/// 1, like every other error a user can cause.
fn usage_error(e: clap::Error) -> ! {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            std::process::exit(0);
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{}", e.render());
            std::process::exit(1);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("shallot: {first} (see shallot --help)");
    std::process::exit(1);
}
