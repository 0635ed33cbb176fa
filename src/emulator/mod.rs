//! Bot API emulator: a fake Telegram spoken to over HTTP only.
mod spec;
