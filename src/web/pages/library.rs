//! `/admin/library`: newest results across users as thumbnails made on the blocking pool.

use super::Layout;
use crate::domain::ImageId;
use crate::store::StoreError;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

const GALLERY_ITEMS: usize = 60;
const THUMB_SIDE: u32 = crate::imaging::THUMBNAIL_SIDE;

/// A gallery tile.
pub struct Tile {
    pub id: String,
    pub owner: i64,
    pub model: String,
    pub prompt: String,
    pub created: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/library.html")]
pub struct LibraryPage {
    layout: Layout,
    tiles: Vec<Tile>,
}

/// `GET /admin/library`.
pub async fn list(State(st): State<WebState>, session: AdminSession) -> Result<LibraryPage, WebError> {
    let items = st.store.read(|rx| rx.find_library_recent(GALLERY_ITEMS)).await?;
    let tiles = items
        .iter()
        .map(|i| Tile {
            id: i.id.to_string(),
            owner: i.owner.0,
            model: i.model_id.clone(),
            prompt: i.prompt.clone(),
            created: fmt_time(i.created_at),
        })
        .collect();
    Ok(LibraryPage { layout: Layout::new("Library", Some(&session)), tiles })
}

/// `GET /admin/library/{id}/thumb`: a JPEG at most 256 px on its long side.
pub async fn thumb(
    State(st): State<WebState>,
    _session: AdminSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = ImageId(uuid::Uuid::parse_str(&id).map_err(|_| WebError::NotFound)?.as_u128());
    let item =
        st.store.read(move |rx| rx.get_library_item(id)?.ok_or_else(|| StoreError::NotFound("image".into()))).await?;
    let path = st.store.media_path(&item.sha256, &item.ext);
    let jpeg = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| WebError::Internal(format!("{}: {e}", path.display())))?;
        crate::imaging::thumbnail(&bytes, THUMB_SIDE, &crate::imaging::Limits::default())
            .map_err(|e| WebError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], jpeg).into_response())
}
