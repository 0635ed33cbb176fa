//! The sandbox chat page: talk to the bot as a test user through the control API.
//! Script and style live in `static/` (no inline code, so a strict CSP can apply).

use crate::assets::Static as Assets;
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The fixed sandbox user (also its private chat id).
pub(crate) const SANDBOX_USER_ID: i64 = 10001;
const SANDBOX_FIRST_NAME: &str = "Sandbox";

#[derive(Template, WebTemplate)]
#[template(path = "sandbox.html")]
pub(crate) struct SandboxPage {
    user_id: i64,
    first_name: &'static str,
    css_url: String,
    js_url: String,
    icon_url: String,
}

/// `/emulator/static/{path}?v={hash}`: the hash changes with the file, so browsers refetch
/// edits. Under `/emulator/` so it never clashes with the admin panel's asset route.
fn asset_url(path: &str) -> String {
    let v = crate::assets::hash(path, 6).unwrap_or_default();
    format!("/emulator/static/{path}?v={v}")
}

/// `GET /sandbox`.
pub(crate) async fn page() -> SandboxPage {
    SandboxPage {
        user_id: SANDBOX_USER_ID,
        first_name: SANDBOX_FIRST_NAME,
        css_url: asset_url("sandbox.css"),
        js_url: asset_url("sandbox.js"),
        icon_url: asset_url("sandbox-icon.svg"),
    }
}

/// `GET /emulator/static/{*path}` from the embedded `static/` folder.
pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    match Assets::get(&path) {
        Some(f) => (
            [(header::CONTENT_TYPE, f.metadata.mimetype().to_owned()), (header::CACHE_CONTROL, "no-cache".to_owned())],
            f.data.into_owned(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
