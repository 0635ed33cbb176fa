//! The shared reqwest client builder.
