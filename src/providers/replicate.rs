//! placeholder

/// Whether `endpoint` is `owner/name` or a 64-hex version id.
pub fn valid_endpoint(endpoint: &str) -> bool {
    let e = endpoint.trim();
    let hex = e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit());
    let named = e.split('/').count() == 2
        && e.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    hex || named
}
