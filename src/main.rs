//! The `cofre` command: the servers (`serve`, `primary`, `gateway`),
//! administration of a data directory, and benchmarks.

mod bench;
mod bench_api;
mod bench_backup;
mod bench_dovecot;
mod bench_imap;
mod bench_jmap;
mod bench_link;
mod bench_pop3;
mod bench_postfix;
mod bench_smtp;
mod cli;
mod config;
mod imap_import;
mod serve;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
