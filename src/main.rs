//! mediabot: a self-hosted Telegram bot appliance for AI media generation.
//!
//! One binary: the teloxide bot, the redb store (users, ledger, durable jobs, library), the
//! web listener (admin panel, webhook route, sandbox page and Bot API emulator), the control
//! socket for ops commands, and local imaging.

mod admin;
mod app;
mod assets;
#[cfg(feature = "bench")]
mod bench;
mod billing;
mod bot;
mod catalog;
mod cli;
mod config;
mod control;
mod domain;
mod downloads;
mod emulator;
mod health;
mod imaging;
mod jobs;
mod library;
mod llm;
mod providers;
mod store;
mod telemetry;
#[cfg(test)]
mod tests;
mod web;
mod webhook;

fn main() -> std::process::ExitCode {
    cli::main()
}
