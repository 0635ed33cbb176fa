//! Cross-module tests (one test binary).
