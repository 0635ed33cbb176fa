//! `GET /download/{id}?e=<expiry>&s=<signature>`: a result too big for Telegram, by the signed
//! link the bot sent (see [`crate::downloads`]). No session: the signature is the permission.
//! The URL names a library item, never a path; the file is streamed from the media store.

use crate::domain::ImageId;
use crate::web::WebState;
use crate::web::error::WebError;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The link's query: expiry (Unix seconds) and hex HMAC.
#[derive(Debug, serde::Deserialize)]
pub struct LinkQuery {
    e: Option<i64>,
    s: Option<String>,
}

/// Streams the item's file as an attachment with its sniffed MIME type. 404 without
/// `web.public_url`, for a malformed or wrongly signed link and for an item that is gone;
/// 403 for a correctly signed link past its expiry.
pub async fn get(
    State(st): State<WebState>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Result<Response, WebError> {
    if st.config.web.public_url.is_none() {
        return Err(WebError::NotFound);
    }
    let (Some(id), Some(expires_at), Some(sig)) = (ImageId::from_short(&id), q.e, q.s) else {
        return Err(WebError::NotFound);
    };
    let key = st.download_key()?;
    let now = crate::domain::now_ms() / 1000;
    match key.verify(id, expires_at, &sig, now) {
        Ok(()) => {}
        Err(crate::downloads::LinkError::BadSignature) => return Err(WebError::NotFound),
        Err(crate::downloads::LinkError::Expired) => return Err(WebError::Forbidden("this download link has expired")),
    }
    let item = st.store.read(move |rx| rx.get_library_item(id)).await?.ok_or(WebError::NotFound)?;
    let path = st.store.media_path(&item.sha256, &item.ext);
    let file = tokio::fs::File::open(&path).await.map_err(|_| WebError::NotFound)?;
    let len = file.metadata().await.map_err(|e| WebError::Internal(format!("{}: {e}", path.display())))?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let disposition = format!("attachment; filename=\"mediabot-{}.{}\"", item.id.short(), item.ext);
    Ok((
        [
            (header::CONTENT_TYPE, item.mime.clone()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "private, max-age=3600".into()),
        ],
        body,
    )
        .into_response())
}
