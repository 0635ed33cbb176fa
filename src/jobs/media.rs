//! Video and animation results: what is stored (an MP4 made faststart), what Telegram is told
//! (duration, size, thumbnail), and the download link for a result over the 50 MB upload limit.

use super::{Inner, ResultFiles, VideoFacts};
use crate::domain::{ImageId, MediaKind};
use crate::imaging::video;
use crate::store::records::LibraryItem;

/// Largest file the Bot API takes in one multipart upload (sendVideo, sendDocument: 50 MB,
/// protocols.md §1.4). A bigger result goes out as a link, or not at all.
pub const TELEGRAM_UPLOAD_BYTES: usize = 50 * 1000 * 1000;

/// Largest result kept when it can be sent as a link (`web.public_url` set): 2 GB, what a
/// local Bot API server would take; far more than any provider download allows today.
pub const MAX_LINKED_BYTES: usize = 2000 * 1000 * 1000;

/// Public URL and signing key of download links, when `web.public_url` is set.
#[derive(Debug, Clone)]
pub struct Links {
    pub public_url: String,
    pub key: crate::downloads::LinkKey,
}

/// The form of a result that is stored: an MP4 whose `moov` follows its `mdat` is made
/// faststart ([`video::faststart`]), so the library file is the streamable one; anything else
/// as it is.
pub(crate) fn storable(bytes: Vec<u8>) -> Vec<u8> {
    if MediaKind::sniff(&bytes).0 == MediaKind::Video {
        if let Some(fast) = video::faststart(&bytes) {
            return fast;
        }
    }
    bytes
}

/// Width and height to record for a stored video or animation (0 × 0 when unknown).
pub(crate) fn dimensions(bytes: &[u8]) -> (u32, u32) {
    video::probe(bytes).map_or((0, 0), |m| (m.width, m.height))
}

/// Facts for sendVideo / sendAnimation: probed metadata, the thumbnail (an animation's first
/// frame, else `input_photo` scaled to ≤ 320 px), faststart and container. CPU work: call on
/// the blocking pool.
pub(crate) fn facts(bytes: &[u8], input_photo: Option<&[u8]>, limits: &crate::imaging::Limits) -> VideoFacts {
    let mime = MediaKind::sniff(bytes).1;
    let mp4 = matches!(mime, "video/mp4" | "video/quicktime");
    let thumbnail = video::thumbnail(bytes).or_else(|| {
        let photo = input_photo?;
        crate::imaging::thumbnail(photo, crate::imaging::THUMBNAIL_SIDE, limits).ok()
    });
    VideoFacts { meta: video::probe(bytes), thumbnail, faststart: mp4 && video::is_faststart(bytes), mp4 }
}

/// The bytes of the first input photo of the job that made `item` (an image-to-video job's
/// photo), for an MP4's thumbnail; `None` for text-to-video, or when the photo was pruned.
pub(crate) async fn input_photo(inner: &Inner, item: &LibraryItem) -> Option<Vec<u8>> {
    let job_id = item.job_id?;
    let job = inner.store.read(move |rx| rx.get_job(job_id)).await.ok()??;
    let sha = job.payload.input_files().next()?.to_string();
    let store = inner.store.clone();
    let (path, _) = tokio::task::spawn_blocking(move || store.find_media_file(&sha)).await.ok()??;
    tokio::fs::read(path).await.ok()
}

/// A link message for a stored result of `size` bytes, valid [`crate::downloads::LINK_VALID_SECS`]
/// from now; `None` without `web.public_url`.
pub(crate) fn link(inner: &Inner, id: ImageId, size: u64) -> Option<ResultFiles> {
    let links = inner.links.as_ref()?;
    let expires_at = crate::domain::now_ms() / 1000 + crate::downloads::LINK_VALID_SECS;
    Some(ResultFiles::Link { url: links.key.url(&links.public_url, id, expires_at), size })
}
