//! Demo provider: renders the prompt locally. Only `sandbox` uses it.
