//! The files of `static/`, compiled into the binary once. The admin panel serves them under
//! content-hashed URLs (`web::assets`), the sandbox page under its own route
//! (`emulator::sandbox`).

use rust_embed::RustEmbed;

/// `static/` (debug builds read it from disk unless `debug-embed` is on).
#[derive(RustEmbed)]
#[folder = "static/"]
pub struct Static;

/// First `n` bytes of the file's sha256, hex; `None` for an unknown file.
pub fn hash(path: &str, n: usize) -> Option<String> {
    Static::get(path).map(|f| hex::encode(&f.metadata.sha256_hash()[..n.min(32)]))
}
