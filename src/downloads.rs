//! Signed download links for results over Telegram's 50 MB bot upload limit (protocols.md
//! §1.4): `<web.public_url>/download/<item>?e=<expiry>&s=<signature>`, served by the web
//! panel's download route. The URL names a library item by id and never a file path; the
//! signature is HMAC-SHA256 (RFC 2104) over `"<item>.<expiry>"` under a 32-byte key the
//! appliance generates once and keeps in `<data_dir>/download-link.key` (mode 0600). Deleting
//! that file revokes every link handed out. Used by `jobs` (to make links) and `web` (to check
//! them); it uses only `domain`.

use crate::domain::ImageId;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

/// How long a link works: 7 days, in seconds.
pub const LINK_VALID_SECS: i64 = 7 * 24 * 3600;
/// The key file's name under the data directory.
pub const KEY_FILE: &str = "download-link.key";

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Wrong or malformed signature (also a changed item id or expiry): answered 404.
    #[error("bad signature")]
    BadSignature,
    /// The signature is right but the expiry has passed: answered 403.
    #[error("link expired")]
    Expired,
}

/// The HMAC key for download links. `Debug` does not print it.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

impl LinkKey {
    /// A key from its 32 bytes (tests).
    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; 32]) -> LinkKey {
        LinkKey(bytes)
    }

    /// Reads the key from `<data_dir>/download-link.key`, creating it (32 random bytes, mode
    /// 0600, never overwritten) on first use. Errors: the file cannot be read or created, or it
    /// does not hold exactly 32 bytes.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<LinkKey> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => return Self::parse(&bytes),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        let key: [u8; 32] = rand::random();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(&path) {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, &key)?;
                f.sync_all()?;
                Ok(LinkKey(key))
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::parse(&std::fs::read(&path)?),
            Err(e) => Err(e),
        }
    }

    fn parse(bytes: &[u8]) -> std::io::Result<LinkKey> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{KEY_FILE} must hold 32 bytes"))
        })?;
        Ok(LinkKey(key))
    }

    fn mac(&self, item: ImageId, expires_at: i64) -> Hmac<Sha256> {
        #[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(format!("{}.{expires_at}", item.short()).as_bytes());
        mac
    }

    /// The link for `item` valid until `expires_at` (Unix seconds): `public_url` (an https
    /// URL, a trailing `/` ignored) + `/download/<item short id>?e=<expires_at>&s=<hex HMAC>`.
    pub fn url(&self, public_url: &str, item: ImageId, expires_at: i64) -> String {
        let sig = hex::encode(self.mac(item, expires_at).finalize().into_bytes());
        format!("{}/download/{}?e={expires_at}&s={sig}", public_url.trim_end_matches('/'), item.short())
    }

    /// Checks a link's parts at time `now` (Unix seconds): the signature first (constant
    /// time), then the expiry.
    pub fn verify(&self, item: ImageId, expires_at: i64, signature: &str, now: i64) -> Result<(), LinkError> {
        let sig = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        self.mac(item, expires_at).verify_slice(&sig).map_err(|_| LinkError::BadSignature)?;
        if now > expires_at {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_verify_only_unchanged_and_unexpired() {
        let key = LinkKey::from_bytes([7; 32]);
        let item = ImageId(12345);
        let url = key.url("https://bot.example.org/", item, 1_000);
        assert!(url.starts_with("https://bot.example.org/download/9ix?e=1000&s="), "{url}");
        let sig = url.rsplit("s=").next().expect("signature");
        assert_eq!(sig.len(), 64);
        assert_eq!(key.verify(item, 1_000, sig, 999), Ok(()));
        assert_eq!(key.verify(item, 1_000, sig, 1_001), Err(LinkError::Expired));
        assert_eq!(key.verify(item, 2_000, sig, 999), Err(LinkError::BadSignature), "expiry changed");
        assert_eq!(key.verify(ImageId(12346), 1_000, sig, 999), Err(LinkError::BadSignature), "item changed");
        assert_eq!(key.verify(item, 1_000, "zz", 999), Err(LinkError::BadSignature));
        let other = LinkKey::from_bytes([8; 32]);
        assert_eq!(other.verify(item, 1_000, sig, 999), Err(LinkError::BadSignature), "another key");
    }

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = LinkKey::load_or_create(dir.path()).expect("created");
        let b = LinkKey::load_or_create(dir.path()).expect("read");
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").expect("write");
        assert!(LinkKey::load_or_create(dir.path()).is_err());
        assert_eq!(format!("{a:?}"), "LinkKey(***)");
    }
}
