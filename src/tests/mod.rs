//! Cross-module tests (one test binary): end-to-end through the Bot API emulator with fake
//! providers, plus shared helpers.

mod add_text;
mod admin_bot;
mod browser;
mod comfy_pool;
mod crash;
mod crypto_pay;
mod e2e;
mod failover;
pub mod fakes;
mod faults;
mod hardening;
pub mod harness;
mod kinds;
mod levels;
mod library;
mod llm;
mod packaging;
mod payments;
mod providers;
mod reference;
mod referral;
mod refunds;
mod sandbox;
mod structure;
mod tools;
mod translate;
mod video;
mod video_results;
mod web;
mod webhook;
mod write;
