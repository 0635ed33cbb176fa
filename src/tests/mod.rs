//! Cross-module tests (one test binary).

pub mod fakes;
mod providers;
