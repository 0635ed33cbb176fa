//! Cross-module tests (one test binary): end-to-end through the Bot API emulator with fake
//! providers, plus shared helpers.

mod e2e;
pub mod fakes;
mod faults;
pub mod harness;
mod web;
mod webhook;
