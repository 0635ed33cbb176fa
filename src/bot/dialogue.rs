//! Multi-step flows: where each chat is, stored as JSON under the chat id in the dialogues
//! table, so a restart between two messages does not lose it.

use crate::bot::{BotCtx, BotError};
use serde::{Deserialize, Serialize};
use teloxide::prelude::*;

/// Where a chat is. Stored as JSON under the chat id (dialogues table); the `flow` tag names
/// the step, and every stored shape must keep decoding (see the tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
pub enum Step {
    AddTextPhoto,
    AddTextText {
        input: String,
    },
    AddTextWishes {
        input: String,
        text: String,
    },
    /// Waiting for the name of a new category for a library item (short id).
    CategoryName {
        item: String,
    },
    /// Waiting for the name of a preset saved from a library item (short id).
    PresetName {
        item: String,
    },
    /// Waiting for a preset's new name.
    PresetRename {
        number: u32,
    },
}

/// The chat's current step, if it is in a flow. An unreadable stored state (written by a
/// newer build) counts as none.
pub async fn current(ctx: &BotCtx, chat: ChatId) -> Result<Option<Step>, BotError> {
    let raw = ctx.store.read(move |rx| rx.get_dialogue(chat.0)).await?;
    Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Puts the chat at `step`.
pub async fn set(ctx: &BotCtx, chat: ChatId, step: &Step) -> Result<(), BotError> {
    let bytes = serde_json::to_vec(step).map_err(|e| crate::store::StoreError::Codec(e.to_string()))?;
    ctx.store.write(move |tx| tx.put_dialogue(chat.0, &bytes)).await?;
    Ok(())
}

/// Leaves any flow (no-op when the chat is in none).
pub async fn clear(ctx: &BotCtx, chat: ChatId) -> Result<(), BotError> {
    ctx.store.write(move |tx| tx.delete_dialogue(chat.0)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_steps_keep_decoding() {
        // Literal states as this version stores them; never edit these, add new ones.
        let cases = [
            (r#"{"flow":"add_text_photo"}"#, Step::AddTextPhoto),
            (r#"{"flow":"add_text_text","input":"ab"}"#, Step::AddTextText { input: "ab".into() }),
            (
                r#"{"flow":"add_text_wishes","input":"ab","text":"hi"}"#,
                Step::AddTextWishes { input: "ab".into(), text: "hi".into() },
            ),
            (r#"{"flow":"category_name","item":"2s"}"#, Step::CategoryName { item: "2s".into() }),
            (r#"{"flow":"preset_name","item":"2s"}"#, Step::PresetName { item: "2s".into() }),
            (r#"{"flow":"preset_rename","number":3}"#, Step::PresetRename { number: 3 }),
        ];
        for (stored, step) in cases {
            assert_eq!(serde_json::from_str::<Step>(stored).expect(stored), step);
            assert_eq!(serde_json::to_string(&step).expect("json"), stored);
        }
    }
}
