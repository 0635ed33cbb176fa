//! mediabot: a self-hosted Telegram bot appliance for AI media generation.
//!
//! One binary: the teloxide bot, the redb store (users, ledger, durable jobs, library), the
//! web listener (sandbox page, Bot API emulator, later the admin panel) and local imaging.

mod app;
mod billing;
mod bot;
mod cli;
mod config;
mod control;
mod domain;
mod emulator;
mod imaging;
mod jobs;
mod providers;
mod store;
mod telemetry;
#[cfg(test)]
mod tests;
mod web;

fn main() -> std::process::ExitCode {
    cli::main()
}
