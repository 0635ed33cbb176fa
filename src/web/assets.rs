//! Embedded `static/` files under content-hashed URLs: `/admin/static/{hash}/{file}`. The hash
//! changes with the bytes, so the response can be cached forever (`immutable`).

use crate::assets::Static;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// First 8 bytes of the file's sha256, hex; `None` for an unknown file.
fn hash(path: &str) -> Option<String> {
    crate::assets::hash(path, 8)
}

/// Fingerprinted URL of an embedded file (a template calls this for every asset link).
pub fn url(path: &str) -> String {
    format!("/admin/static/{}/{path}", hash(path).unwrap_or_else(|| "missing".into()))
}

/// `GET /admin/static/{hash}/{*path}`. A stale hash is a 404 rather than the new bytes under
/// an immutable old URL.
pub async fn get(Path((h, path)): Path<(String, String)>) -> Response {
    match Static::get(&path) {
        Some(f) if hex::encode(&f.metadata.sha256_hash()[..8]) == h => (
            [
                (header::CONTENT_TYPE, f.metadata.mimetype().to_owned()),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_owned()),
            ],
            f.data.into_owned(),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_stable_and_carry_the_content_hash() {
        let a = url("admin.css");
        assert_eq!(a, url("admin.css"), "same bytes, same URL");
        assert!(a.starts_with("/admin/static/") && a.ends_with("/admin.css"), "{a}");
        assert_ne!(a, url("admin.js"));
        assert!(url("nope.css").contains("/missing/"));
    }
}
