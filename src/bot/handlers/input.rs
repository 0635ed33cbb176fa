//! Images from the user, for every flow that takes them: which file of a message is the image,
//! downloading it from Telegram (capped while streaming), and accepting it as a job input
//! (validated, metadata stripped, stored) — with the refusal told in the user's language.

use super::Caller;
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot};
use crate::domain::MAX_DOWNLOAD_BYTES;
use crate::imaging::ImagingError;
use crate::jobs::{InputError, InputInfo};
use futures_util::StreamExt;
use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::FileId;

/// The largest photo size or an image document of `msg`: (file id, size in bytes as Telegram
/// states it). `None` for anything else (text, a PDF, a sticker).
pub fn image_file(msg: &Message) -> Option<(FileId, u32)> {
    if let Some(largest) = msg.photo().and_then(|sizes| sizes.iter().max_by_key(|p| p.width * p.height)) {
        return Some((largest.file.id.clone(), largest.file.size));
    }
    msg.document()
        .filter(|doc| doc.mime_type.as_ref().is_some_and(|m| m.type_() == mime::IMAGE))
        .map(|doc| (doc.file.id.clone(), doc.file.size))
}

/// Downloads a user's image and stores it as a job input (metadata stripped). When the image
/// is refused (too big, not an image, damaged) tells the user why, in their language, and
/// returns `None`.
pub async fn download_input(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    file_id: FileId,
    stated_size: u32,
) -> Result<Option<InputInfo>, BotError> {
    let limit = MAX_DOWNLOAD_BYTES;
    if stated_size as usize > limit {
        bot.send_message(chat, too_big(lang, stated_size as usize)).await?;
        return Ok(None);
    }
    let file = bot.get_file(file_id).await?;
    let stream = bot.download_file_stream(&file.path);
    let bytes = match read_capped(stream, limit).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(seen)) => {
            bot.send_message(chat, too_big(lang, seen)).await?;
            return Ok(None);
        }
        Err(e) => return Err(BotError::Download(teloxide::DownloadError::Network(std::sync::Arc::new(e)))),
    };
    match ctx.jobs.accept_input(bytes).await {
        Ok(info) => Ok(Some(info)),
        Err(InputError::Imaging(e)) => {
            bot.send_message(chat, refusal(lang, &e)).await?;
            Ok(None)
        }
        Err(InputError::Store(e)) => Err(e.into()),
    }
}

/// Collects a download, refusing it as soon as it passes `limit` bytes: `Ok(Err(n))` with the
/// bytes seen by then. Nothing is pre-sized from the size Telegram states (the sender's word),
/// so a lying size cannot make us allocate, and a stream longer than stated is cut.
pub async fn read_capped<S, B, E>(mut stream: S, limit: usize) -> Result<Result<Vec<u8>, usize>, E>
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let chunk = chunk.as_ref();
        if bytes.len() + chunk.len() > limit {
            return Ok(Err(bytes.len() + chunk.len()));
        }
        bytes.extend_from_slice(chunk);
    }
    Ok(Ok(bytes))
}

fn too_big(lang: Lang, bytes: usize) -> String {
    let detail = lang.tf("image_bytes", &[("size", &megabytes(bytes)), ("max", &megabytes(MAX_DOWNLOAD_BYTES))]);
    lang.tf("photo_too_big", &[("detail", &detail)])
}

/// Whole megabytes, rounded up (a 20.3 MB file is "21", never "20" beside a 20 MB limit).
fn megabytes(bytes: usize) -> usize {
    bytes.div_ceil(1 << 20)
}

/// What the user is told when an image is refused, in their language (the English error text
/// is for logs).
pub fn refusal(lang: Lang, e: &ImagingError) -> String {
    match e {
        ImagingError::TooLarge { bytes, .. } => too_big(lang, *bytes),
        ImagingError::TooManyPixels { width, height, max } => {
            let megapixels = max / 1_000_000;
            let detail = lang.tf("image_pixels", &[("width", width), ("height", height), ("max", &megapixels)]);
            lang.tf("photo_too_big", &[("detail", &detail)])
        }
        ImagingError::Unsupported { .. } => lang.tf("photo_bad", &[("reason", &lang.t("image_unsupported"))]),
        ImagingError::Corrupt(_) | ImagingError::Encode(_) => {
            lang.tf("photo_bad", &[("reason", &lang.t("image_corrupt"))])
        }
    }
}

/// How long after an album's last photo the bot answers.
pub const ALBUM_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Answers an album once: the photos of an album arrive as separate messages (same
/// `media_group_id`, moments apart) and each joins the chat's photo set (the edit's or a photo
/// mode's step, [`crate::bot::dialogue::Step::photo_set`]).
/// Called for each, this waits [`ALBUM_SETTLE`] and then calls `answer` with the set only if
/// it still holds `count` photos — i.e. no newer photo joined meanwhile, so only the last
/// photo's call answers.
pub fn after_album<F, Fut>(ctx: std::sync::Arc<BotCtx>, chat: ChatId, count: usize, answer: F)
where
    F: FnOnce(Vec<String>, Option<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BotError>> + Send,
{
    tokio::spawn(async move {
        tokio::time::sleep(ALBUM_SETTLE).await;
        let settled = match ctx.dialogues.step(chat).await {
            Ok(step) => step.photo_set().filter(|(inputs, _)| inputs.len() == count),
            Err(_) => None,
        };
        if let Some((inputs, caption)) = settled {
            if let Err(e) = answer(inputs, caption).await {
                tracing::warn!(error = %e, "could not answer an album");
            }
        }
    });
}

/// Sends a flow's question `text` with its buttons, led by `intro` when given (one message
/// rather than two: Telegram paces a chat to about one message a second).
pub async fn ask(
    bot: &TgBot,
    chat: ChatId,
    intro: Option<String>,
    text: String,
    kb: teloxide::types::InlineKeyboardMarkup,
) -> Result<(), BotError> {
    let text = match intro {
        Some(intro) => format!("{intro}\n\n{text}"),
        None => text,
    };
    bot.send_message(chat, text).reply_markup(kb).await?;
    Ok(())
}

/// Whether a caption or text is an instruction (not empty, not a command).
pub fn instruction(text: Option<&str>) -> Option<String> {
    text.map(str::trim).filter(|t| !t.is_empty() && !t.starts_with('/')).map(str::to_string)
}

/// Convenience for handlers: the image of `msg`, downloaded and accepted, or `None` when the
/// message has none (`Ok(None)` after telling the user when it was refused).
pub async fn image_of(bot: &TgBot, msg: &Message, ctx: &BotCtx, me: &Caller) -> Result<Option<InputInfo>, BotError> {
    match image_file(msg) {
        Some((file_id, size)) => download_input(bot, msg.chat.id, ctx, me.lang, file_id, size).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn downloads_are_capped_while_streaming() {
        let chunks = |n: usize| futures_util::stream::iter((0..n).map(|_| Ok::<_, ()>(vec![7u8; 1000])));
        assert_eq!(read_capped(chunks(3), 3000).await, Ok(Ok(vec![7u8; 3000])), "exactly the limit is fine");
        // A stream that goes on past the cap stops at the first chunk over it, whatever the
        // stated size was.
        let endless = futures_util::stream::repeat_with(|| Ok::<_, ()>(vec![0u8; 64 * 1024]));
        assert_eq!(read_capped(endless, 1 << 20).await, Ok(Err((1 << 20) + 64 * 1024)));
        let failing = futures_util::stream::iter([Ok(vec![1u8]), Err("reset")]);
        assert_eq!(read_capped(failing, 10).await, Err("reset"));
    }

    #[test]
    fn refusals_are_in_the_users_language() {
        let cases = [
            ImagingError::TooLarge { bytes: 21 << 20, max: 20 << 20 },
            ImagingError::TooManyPixels { width: 10_000, height: 9_000, max: 50_000_000 },
            ImagingError::Unsupported { format: "image/tiff".into() },
            ImagingError::Corrupt("bad huffman".into()),
        ];
        for e in &cases {
            let ru = refusal(Lang::Ru, e);
            assert!(ru.chars().any(|c| ('а'..='я').contains(&c)), "{ru}");
            assert!(!ru.contains("huffman") && !ru.contains("image/tiff"), "no English detail: {ru}");
            assert_ne!(refusal(Lang::En, e), ru);
        }
        assert!(refusal(Lang::Ru, &cases[0]).contains("21 МБ"), "{}", refusal(Lang::Ru, &cases[0]));
        assert!(refusal(Lang::En, &cases[1]).contains("10000×9000"), "{}", refusal(Lang::En, &cases[1]));
    }
}
