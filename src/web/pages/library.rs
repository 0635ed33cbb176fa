//! `/admin/library`: newest results across users (or one user's, or one kind) as thumbnails
//! made on the blocking pool; open the original file, delete an item.

use super::Layout;
use crate::domain::{ImageId, UserId};
use crate::store::StoreError;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

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
    user: String,
    kind: String,
}

/// Gallery filters: an owner (through the per-user index) and a kind (`create`, `edit`, …).
#[derive(Debug, Default, serde::Deserialize)]
pub struct LibraryQuery {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub kind: String,
}

/// How far back a kind filter looks across all users, in items.
const KIND_WINDOW: usize = 20 * GALLERY_ITEMS;

/// `GET /admin/library?user=&kind=`.
pub async fn list(
    State(st): State<WebState>,
    session: AdminSession,
    Query(q): Query<LibraryQuery>,
) -> Result<LibraryPage, WebError> {
    let user = match q.user.trim() {
        "" => None,
        u => Some(UserId(u.parse().map_err(|_| WebError::BadRequest("user must be a numeric id".into()))?)),
    };
    let kind = q.kind.trim().to_string();
    let filter_kind = kind.clone();
    let items = st
        .store
        .read(move |rx| {
            let mut items = match user {
                Some(u) => rx.find_library(u)?,
                None if filter_kind.is_empty() => rx.find_library_recent(GALLERY_ITEMS)?,
                None => rx.find_library_recent(KIND_WINDOW)?,
            };
            items.retain(|i| filter_kind.is_empty() || i.kind == filter_kind);
            items.truncate(GALLERY_ITEMS);
            Ok::<_, WebError>(items)
        })
        .await?;
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
    Ok(LibraryPage {
        layout: Layout::new("Library", Some(&session)),
        tiles,
        user: user.map(|u| u.0.to_string()).unwrap_or_default(),
        kind,
    })
}

fn parse_image_id(id: &str) -> Result<ImageId, WebError> {
    Ok(ImageId(uuid::Uuid::parse_str(id).map_err(|_| WebError::NotFound)?.as_u128()))
}

/// The item `id` names and the path of its file under `media/`; 404 for a bad or unknown id.
async fn item_file(
    st: &WebState,
    id: &str,
) -> Result<(crate::store::records::LibraryItem, std::path::PathBuf), WebError> {
    let id = parse_image_id(id)?;
    let item =
        st.store.read(move |rx| rx.get_library_item(id)?.ok_or_else(|| StoreError::NotFound("image".into()))).await?;
    let path = st.store.media_path(&item.sha256, &item.ext);
    Ok((item, path))
}

/// `GET /admin/library/{id}/file`: the stored result as it was delivered (its own MIME type).
pub async fn file(
    State(st): State<WebState>,
    _session: AdminSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (item, path) = item_file(&st, &id).await?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| WebError::Internal(format!("{}: {e}", path.display())))?;
    Ok(([(header::CONTENT_TYPE, item.mime.clone()), (header::CACHE_CONTROL, "private, max-age=3600".into())], bytes)
        .into_response())
}

/// `POST /admin/library/{id}/delete`: removes the item for its owner too; the file goes with
/// the last item that references it (the bot's own delete path). Audited with the owner,
/// kind and prompt as "before".
pub async fn delete(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<super::CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let id = parse_image_id(&id)?;
    let deleted = st
        .store
        .write_pruning(move |tx| {
            let Some(item) = tx.get_library_item(id)? else { return Ok((None, vec![])) };
            let orphan = tx.delete_library_item(id)?;
            let before = format!("owner={} kind={} prompt={:?}", item.owner.0, item.kind, item.prompt);
            let entry = session.audit("delete_image", format!("image:{id}"), before, "deleted".into());
            tx.insert_audit(&entry)?;
            Ok::<_, WebError>((Some(item.owner), orphan.into_iter().collect()))
        })
        .await?;
    match deleted {
        Some(owner) => Ok(Redirect::to(&format!("/admin/library?user={}", owner.0))),
        None => Err(WebError::NotFound),
    }
}

/// `GET /admin/library/{id}/thumb`: a JPEG at most 256 px on its long side.
pub async fn thumb(
    State(st): State<WebState>,
    _session: AdminSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (_, path) = item_file(&st, &id).await?;
    let jpeg = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| WebError::Internal(format!("{}: {e}", path.display())))?;
        crate::imaging::thumbnail(&bytes, THUMB_SIDE, &crate::imaging::Limits::default())
            .map_err(|e| WebError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "private, max-age=3600")], jpeg).into_response())
}
